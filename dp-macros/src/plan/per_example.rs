//! The planner's cost model for a weight applied at T positions per example: the compile-time mirror
//! of `dp_kernels::per_example` (`ghost_flops`, `direct_flops`, `choose_strategy`, scratch lengths).
//!
//! The macro may not depend on the kernels crate, so the formulas are repeated here; the generated
//! code asserts at compile time that the scratch it carves is at least what the kernels ask for, and
//! `tests/model_params_seq.rs` checks the chosen strategies against `dp_kernels::per_example`.

use super::NormStrategy;

/// Rows of the Gram matrices per product in the kernels' ghost norm.
pub const GHOST_TILE: usize = 64;

/// The largest per-example gradient (bytes) the direct norm may form for one weight: above it the
/// ghost norm is used whatever its FLOPs (Bu et al. 2022's mixed rule under a memory cap).
pub const DIRECT_MEMORY_CAP_BYTES: u64 = 1 << 20;

/// FLOPs of the ghost norm of one example (upper-triangular Gram tiles), as the kernel runs it.
pub fn ghost_flops(t: usize, d: usize, p: usize) -> u64 {
    let tile = t.clamp(1, GHOST_TILE);
    let mut flops = 0u64;
    let mut r0 = 0;
    while r0 < t {
        let rows = tile.min(t - r0) as u64;
        let cols = (t - r0) as u64;
        flops += 2 * rows * cols * (d + p) as u64 + 2 * rows * cols;
        r0 += tile;
    }
    flops
}

/// FLOPs of the direct norm of one example: `Δᵀ A` and its square.
pub fn direct_flops(t: usize, d: usize, p: usize) -> u64 {
    2 * (t as u64) * (p as u64) * (d as u64) + 2 * (p as u64) * (d as u64)
}

/// The cheaper strategy in FLOPs, direct only if its per-example gradient fits the memory cap.
pub fn choose_strategy(t: usize, d: usize, p: usize) -> NormStrategy {
    let direct_bytes = 4 * (p as u64) * (d as u64);
    if direct_flops(t, d, p) < ghost_flops(t, d, p) && direct_bytes <= DIRECT_MEMORY_CAP_BYTES {
        NormStrategy::Direct
    } else {
        NormStrategy::Ghost
    }
}

/// FLOPs of `strategy` for one example.
pub fn norm_flops(strategy: NormStrategy, t: usize, d: usize, p: usize) -> u64 {
    match strategy {
        NormStrategy::Direct => direct_flops(t, d, p),
        _ => ghost_flops(t, d, p),
    }
}

/// Scratch `f32`s of one parallel slot of `strategy` (the kernels' `per_example::scratch_len`).
pub fn scratch_len(strategy: NormStrategy, t: usize, d: usize, p: usize) -> usize {
    match strategy {
        NormStrategy::Direct => p * d,
        _ => 2 * t.min(GHOST_TILE) * t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lstm_net_weights_go_direct_and_short_sequences_of_wide_layers_go_ghost() {
        // T = 256, d = h = 100, p = 4h: the numbers of docs/KERNELS.md's strategy table.
        assert_eq!(ghost_flops(256, 100, 400), 41_041_920);
        assert_eq!(direct_flops(256, 100, 400), 20_560_000);
        assert_eq!(choose_strategy(256, 100, 400), NormStrategy::Direct);
        assert_eq!(choose_strategy(2, 100, 400), NormStrategy::Ghost);
        assert_eq!(choose_strategy(6, 4, 20), NormStrategy::Direct);
        // Over the cap the ghost norm is used even when it costs more.
        assert_eq!(choose_strategy(4096, 1000, 1000), NormStrategy::Ghost);
    }
}
