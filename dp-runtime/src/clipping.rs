//! Clip factors from per-example squared gradient norms.
//!
//! The model reports, for each example i and parameter group g, ‖g_{i,g}‖². The runtime turns them into
//! factors c_{i,g} such that the clipped per-example gradient Σ_g c_{i,g}·g_{i,g} has norm ≤ C:
//!
//! - **flat** (default): ‖g_i‖² = Σ_g ‖g_{i,g}‖², one factor min(1, C/‖g_i‖) for every group;
//! - **per-layer**: each of the G groups gets the bound C_g = C/√G and its own factor
//!   min(1, C_g/‖g_{i,g}‖), so ‖clipped g_i‖² ≤ Σ_g C_g² = C²: the sensitivity stays C.
//!
//! An example with a non-finite (or negative) squared norm in any group gets factor 0 in every group,
//! contributes nothing, and is counted.

use crate::error::{Error, Result};

/// How the clip norm C bounds each example's gradient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum ClipMode {
    /// One bound C on the whole gradient.
    #[default]
    Flat,
    /// C/√G on each of the G parameter groups.
    PerLayer,
}

/// Writes the clip factors of `examples` examples into `factors` (shaped like `sq_norms`:
/// `[examples, groups]`, example-major) and returns how many examples had a non-finite norm.
pub fn clip_factors(
    mode: ClipMode,
    clip_norm: f64,
    groups: usize,
    sq_norms: &[f32],
    factors: &mut [f32],
) -> Result<usize> {
    if groups == 0 || !sq_norms.len().is_multiple_of(groups) || factors.len() != sq_norms.len() {
        return Err(Error::invalid(
            "sq_norms",
            format!("{} norms, {} factors for {groups} groups", sq_norms.len(), factors.len()),
        ));
    }
    let mut non_finite = 0;
    let group_bound = match mode {
        ClipMode::Flat => clip_norm,
        ClipMode::PerLayer => clip_norm / (groups as f64).sqrt(),
    };
    for (norms, out) in sq_norms.chunks_exact(groups).zip(factors.chunks_exact_mut(groups)) {
        if norms.iter().any(|&s| !s.is_finite() || s < 0.0) {
            non_finite += 1;
            out.fill(0.0);
            continue;
        }
        match mode {
            ClipMode::Flat => {
                let norm = norms.iter().map(|&s| s as f64).sum::<f64>().sqrt();
                out.fill(factor(group_bound, norm));
            }
            ClipMode::PerLayer => {
                for (f, &s) in out.iter_mut().zip(norms) {
                    *f = factor(group_bound, (s as f64).sqrt());
                }
            }
        }
    }
    Ok(non_finite)
}

/// min(1, bound/norm), rounded down to `f32` so that factor·norm never exceeds the bound by rounding.
fn factor(bound: f64, norm: f64) -> f32 {
    if norm <= bound {
        return 1.0;
    }
    let exact = bound / norm;
    let rounded = exact as f32;
    if rounded as f64 > exact {
        f32::from_bits(rounded.to_bits() - 1)
    } else {
        rounded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_and_per_layer_factors() {
        let sq = [9.0f32, 16.0, 0.25, 0.0];
        let mut f = [0.0f32; 4];
        assert_eq!(clip_factors(ClipMode::Flat, 1.0, 2, &sq, &mut f).unwrap(), 0);
        assert!((f[0] - 0.2).abs() < 1e-7 && f[0] == f[1]);
        assert_eq!(f[2], 1.0);
        clip_factors(ClipMode::PerLayer, 2.0f64.sqrt(), 2, &sq, &mut f).unwrap();
        assert!((f[0] - 1.0 / 3.0).abs() < 1e-7 && (f[1] - 0.25).abs() < 1e-7);
        assert_eq!(&f[2..], &[1.0, 1.0]);
    }

    #[test]
    fn non_finite_norms_give_zero() {
        let sq = [f32::NAN, 1.0, f32::INFINITY, 1.0, 1.0, 1.0];
        let mut f = [1.0f32; 6];
        assert_eq!(clip_factors(ClipMode::Flat, 1.0, 2, &sq, &mut f).unwrap(), 2);
        assert_eq!(&f[..4], &[0.0; 4]);
        assert!(clip_factors(ClipMode::Flat, 1.0, 4, &sq, &mut f).is_err());
    }
}
