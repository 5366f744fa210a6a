//! The cost model of the norm strategies, the same formulas as `dp_kernels::per_example` (the
//! compiler may depend only on syn/quote/proc-macro2, so it cannot call the kernels crate; the test
//! `tests/model_params.rs` checks that every compiled layer's strategy is the one
//! `dp_kernels::per_example::choose_strategy` picks).
//!
//! A weight `p×d` applied at `T` positions per example: ghost norms cost the upper triangles of two
//! `T×T` Gram matrices in row tiles of 64, direct norms one `p×d` per-example gradient.

use super::NormStrategy;

/// Rows of a ghost-norm Gram tile (`dp_kernels::per_example::GHOST_TILE`).
const GHOST_TILE: usize = 64;

/// FLOPs of the ghost norm of one example.
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

/// FLOPs of the direct norm of one example: the gradient product and its squares.
pub fn direct_flops(t: usize, d: usize, p: usize) -> u64 {
    2 * (t as u64) * (p as u64) * (d as u64) + 2 * (p as u64) * (d as u64)
}

/// Bu et al.'s mixed rule on FLOPs: direct when it is cheaper and its per-example gradient fits the cap.
pub fn choose_strategy(t: usize, d: usize, p: usize, memory_cap_bytes: u64) -> NormStrategy {
    if direct_flops(t, d, p) < ghost_flops(t, d, p) && 4 * (p as u64) * (d as u64) <= memory_cap_bytes {
        NormStrategy::Direct
    } else {
        NormStrategy::Ghost
    }
}

/// Scratch `f32`s of one ghost-norm slot (two Gram tiles).
pub fn ghost_scratch_len(t: usize) -> usize {
    2 * t.min(GHOST_TILE) * t
}

/// Scratch `f32`s of one direct-norm slot (one per-example gradient).
pub fn direct_scratch_len(d: usize, p: usize) -> usize {
    p * d
}

/// Scratch of one slot of `strategy`.
pub fn scratch_len(strategy: NormStrategy, t: usize, d: usize, p: usize) -> usize {
    match strategy {
        NormStrategy::Ghost => ghost_scratch_len(t),
        NormStrategy::Direct => direct_scratch_len(d, p),
    }
}

/// FLOPs of a strategy's norm for one example.
pub fn norm_flops(strategy: NormStrategy, t: usize, d: usize, p: usize) -> u64 {
    match strategy {
        NormStrategy::Ghost => ghost_flops(t, d, p),
        NormStrategy::Direct => direct_flops(t, d, p),
    }
}
