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
    let group_bound = match mode {
        ClipMode::Flat => clip_norm,
        ClipMode::PerLayer => clip_norm / (groups as f64).sqrt(),
    };
    // Branch-free loops: whether an example is clipped is a coin flip for real data near C, and a
    // mispredicted branch per example cost more than the square root and division (logreg: 15% of
    // the private step). One group, the common case, is one loop over examples that vectorises.
    let mut non_finite = 0;
    match mode {
        ClipMode::Flat if groups == 1 => {
            for (out, &s) in factors.iter_mut().zip(sq_norms) {
                let bad = invalid(s);
                non_finite += bad as usize;
                *out = if bad { 0.0 } else { factor(group_bound, (s as f64).sqrt()) };
            }
        }
        ClipMode::Flat => {
            for (norms, out) in sq_norms.chunks_exact(groups).zip(factors.chunks_exact_mut(groups)) {
                let bad = norms.iter().fold(false, |bad, &s| bad | invalid(s));
                non_finite += bad as usize;
                let norm = norms.iter().map(|&s| s as f64).sum::<f64>().sqrt();
                out.fill(if bad { 0.0 } else { factor(group_bound, norm) });
            }
        }
        ClipMode::PerLayer => {
            for (norms, out) in sq_norms.chunks_exact(groups).zip(factors.chunks_exact_mut(groups)) {
                let bad = norms.iter().fold(false, |bad, &s| bad | invalid(s));
                non_finite += bad as usize;
                for (f, &s) in out.iter_mut().zip(norms) {
                    *f = if bad { 0.0 } else { factor(group_bound, (s as f64).sqrt()) };
                }
            }
        }
    }
    Ok(non_finite)
}

/// A squared norm that is NaN, infinite or negative.
#[inline(always)]
fn invalid(sq_norm: f32) -> bool {
    !(0.0..f32::INFINITY).contains(&sq_norm)
}

/// min(1, bound/norm), rounded down to `f32` so that factor·norm never exceeds the bound by rounding.
/// Without branches (see [`clip_factors`]).
#[inline(always)]
fn factor(bound: f64, norm: f64) -> f32 {
    let exact = bound / norm;
    let rounded = exact as f32;
    // One step down where rounding to nearest went up (rounded ≥ 0 here, so the bits step down).
    let down = f32::from_bits(rounded.to_bits() - u32::from(rounded as f64 > exact));
    if norm <= bound {
        1.0
    } else {
        down
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

    /// The branching form of [`factor`], as it was first written.
    fn factor_reference(bound: f64, norm: f64) -> f32 {
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

    #[test]
    fn branch_free_factors_equal_the_branching_form_and_never_overshoot() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for i in 0..100_000u64 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let bound = [1.0, 0.1, 3.7, 1e-3][(i % 4) as usize];
            // Norms spread over many orders of magnitude around the bound, and exact multiples of it.
            let norm = if i % 10 == 0 {
                bound * (i % 7) as f64
            } else {
                bound * 2f64.powf((state >> 11) as f64 / (1u64 << 53) as f64 * 40.0 - 20.0)
            };
            let f = factor(bound, norm);
            assert_eq!(f.to_bits(), factor_reference(bound, norm).to_bits(), "bound {bound} norm {norm}");
            assert!(f as f64 * norm <= bound || f == 1.0, "bound {bound} norm {norm}");
        }
    }

    #[test]
    fn one_group_and_several_groups_agree() {
        let sq = [4.0f32, 0.25, 1e30, 0.0, 9.0, f32::NAN, -1.0, f32::INFINITY, 1.0];
        let mut one = [7.0f32; 9];
        assert_eq!(clip_factors(ClipMode::Flat, 1.5, 1, &sq, &mut one).unwrap(), 3);
        for (i, &s) in sq.iter().enumerate() {
            let expected =
                if s >= 0.0 && s.is_finite() { factor_reference(1.5, (s as f64).sqrt()) } else { 0.0 };
            assert_eq!(one[i].to_bits(), expected.to_bits(), "{s}");
            // The same norms split over three groups of which two are zero give the same factors.
            let split = [s, 0.0, 0.0];
            let mut three = [7.0f32; 3];
            clip_factors(ClipMode::Flat, 1.5, 3, &split, &mut three).unwrap();
            assert_eq!(three, [one[i]; 3]);
        }
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
