//! The cost model of the norm strategies of a weight `p×d` applied at `T` positions per example: ghost
//! norms cost the upper triangles of two `T×T` Gram matrices in row tiles of [`GHOST_TILE`], direct
//! norms one `p×d` per-example gradient. The kernels run exactly these counts
//! (`dp_kernels::per_example`); the compiler chooses with [`choose_strategy`] and reports the FLOPs.

use crate::{PositionalLayer, Strategy};

/// Rows of the Gram matrices computed per product in the ghost norm: bounds its scratch to
/// `2·GHOST_TILE·T` values whatever `T` is.
pub const GHOST_TILE: usize = 64;

/// The per-example memory the compiler lets a direct norm use for one layer's gradient: 1 MiB. Layers
/// whose per-example gradient is larger always use ghost norms (Bu et al. 2022's mixed rule under a
/// memory cap); every direct layer of the six built-in models is far below it (the LSTM's weights:
/// 160 kB).
pub const DIRECT_MEMORY_CAP_BYTES: u64 = 1 << 20;

/// The per-example memory the compiler lets the kept per-example gradients of ALL direct layers of a
/// model take together: 1 MiB. A direct layer applied at more than one position keeps the gradients
/// its norm forms, so that its clipped sum is the weighted sum `Σ_i c_i G_i` (`2·p·d` FLOPs per
/// example) instead of a second product over every position (`2·T·p·d`); layers are kept in forward
/// order while the total fits, the others fall back to the book-keeping product. At the trainer's
/// default physical chunk of 1 GiB the kept gradients then take at most an eighth of it at B = 128.
/// The built-in models keep at most 527 kB per example (the text transformer's MLP layers; the CIFAR-10
/// CNN 354 kB, the LSTM 322 kB).
pub const KEPT_GRADIENTS_CAP_BYTES: u64 = 1 << 20;

/// Whether a layer whose norm is computed with `strategy` at `positions` positions per example keeps
/// its per-example gradient (`bytes` per example) for the clipped sum, when `kept_so_far` bytes per
/// example are already kept by earlier layers: only a direct norm forms the gradient; at one position
/// the book-keeping product costs what the weighted sum costs (one multiply-add per example and
/// weight) without the memory; and the total stays under [`KEPT_GRADIENTS_CAP_BYTES`].
pub fn keeps_gradients(strategy: Strategy, positions: usize, bytes: u64, kept_so_far: u64) -> bool {
    strategy == Strategy::Direct && positions > 1 && kept_so_far + bytes <= KEPT_GRADIENTS_CAP_BYTES
}

/// FLOPs of the clipped sum of `len` kept per-example values (all groups, weight and bias): one
/// multiply-add per example and value.
pub fn kept_sum_flops(len: usize) -> u64 {
    2 * len as u64
}

/// FLOPs of the ghost norm for one example and one group, exactly as the kernel runs it: the upper
/// triangle of both Gram matrices, tile by tile (`2·rows·cols·(d+p)` per tile), plus the element-wise
/// products. About `T²(d+p)` for large T (half of the full Grams' `2T²(d+p)`).
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

/// FLOPs of the direct norm for one example and one group: the product `Δᵀ A` (`2·T·p·d`) and its
/// square (`2·p·d`).
pub fn direct_flops(t: usize, d: usize, p: usize) -> u64 {
    2 * (t as u64) * (p as u64) * (d as u64) + 2 * (p as u64) * (d as u64)
}

/// FLOPs of `strategy`'s norm for one example and one group.
pub fn norm_flops(strategy: Strategy, t: usize, d: usize, p: usize) -> u64 {
    match strategy {
        Strategy::Ghost => ghost_flops(t, d, p),
        Strategy::Direct => direct_flops(t, d, p),
    }
}

/// Bytes of the per-example gradient the direct norm holds per example (and per parallel slot).
pub fn direct_bytes(p: usize, d: usize) -> u64 {
    4 * (p as u64) * (d as u64)
}

/// Bytes of the Gram tiles the ghost norm holds per parallel slot.
pub fn ghost_bytes(t: usize) -> u64 {
    4 * ghost_scratch_len(t) as u64
}

/// The mixed rule of Bu et al. (2022), on FLOPs: the ghost norm when it is not more expensive than the
/// direct one, or when the direct one's per-example gradient (`4·p·d` bytes) exceeds
/// `memory_cap_bytes`; the direct norm otherwise.
///
/// Bu et al. state the rule on space (ghost when `2T² < p·d`); here the two implementations' exact
/// FLOP counts ([`ghost_flops`], [`direct_flops`]) decide, and the space of the direct norm is the
/// cap (the ghost norm's tiles are bounded by `2·GHOST_TILE·T` values, see [`ghost_bytes`]).
pub fn choose_strategy(t: usize, d: usize, p: usize, memory_cap_bytes: u64) -> Strategy {
    if direct_flops(t, d, p) < ghost_flops(t, d, p) && direct_bytes(p, d) <= memory_cap_bytes {
        Strategy::Direct
    } else {
        Strategy::Ghost
    }
}

/// Tasks per thread of the conv passes that run example by example, each with its own slot of one
/// example's patches: a thread that the host slows down then hands its share to the others. The
/// workspace holds this many slots per thread of the pool (never more than the batch), after the
/// per-example buffers of the memory plan.
pub const TASKS_PER_THREAD: usize = 4;

/// Scratch `f32`s per parallel slot for the ghost norm of a layer with `t` positions.
pub const fn ghost_scratch_len(t: usize) -> usize {
    let tile = if t < GHOST_TILE { t } else { GHOST_TILE };
    2 * tile * t
}

/// Scratch `f32`s per parallel slot for the direct norm (one per-example gradient of one group).
pub const fn direct_scratch_len(d: usize, p: usize) -> usize {
    p * d
}

/// Scratch `f32`s per parallel slot for `strategy`. A scratch slice holding `k` slots lets `k` examples
/// run in parallel; one slot is enough, one per example is the most that is used.
pub const fn scratch_len(strategy: Strategy, layer: &PositionalLayer) -> usize {
    match strategy {
        Strategy::Ghost => ghost_scratch_len(layer.positions),
        Strategy::Direct => direct_scratch_len(layer.in_width, layer.out_width),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ghost_flops_count_every_tile_of_the_upper_triangle() {
        // One tile: rows = cols = T.
        assert_eq!(ghost_flops(3, 2, 1), 2 * 3 * 3 * 3 + 2 * 3 * 3);
        // Two tiles at T = 65: 64 rows over 65 columns, then 1 row over 1 column.
        let want = (2 * 64 * 65 * 5 + 2 * 64 * 65) + (2 * 5 + 2);
        assert_eq!(ghost_flops(65, 3, 2), want);
    }

    #[test]
    fn direct_wins_only_when_cheaper_and_under_the_cap() {
        // A linear layer (T = 1): direct 2pd + 2pd = 4pd against ghost 2(d + p) + 2.
        assert_eq!(choose_strategy(1, 100, 10, DIRECT_MEMORY_CAP_BYTES), Strategy::Ghost);
        // Many positions, small weight: direct.
        assert_eq!(choose_strategy(256, 4, 4, DIRECT_MEMORY_CAP_BYTES), Strategy::Direct);
        // The same layer with a cap below its per-example gradient: ghost.
        assert_eq!(choose_strategy(256, 4, 4, 4 * 16 - 1), Strategy::Ghost);
        assert_eq!(scratch_len(Strategy::Direct, &PositionalLayer::new(256, 4, 4)), 16);
        assert_eq!(scratch_len(Strategy::Ghost, &PositionalLayer::new(256, 4, 4)), 2 * 64 * 256);
    }

    #[test]
    fn only_direct_layers_at_several_positions_keep_gradients_under_the_cap() {
        assert!(keeps_gradients(Strategy::Direct, 1024, 4 * 896, 0));
        assert!(!keeps_gradients(Strategy::Ghost, 1024, 4 * 896, 0));
        // One position: the book-keeping product is as cheap as the weighted sum.
        assert!(!keeps_gradients(Strategy::Direct, 1, 4 * 896, 0));
        // The cap counts every layer kept before.
        assert!(keeps_gradients(Strategy::Direct, 16, KEPT_GRADIENTS_CAP_BYTES - 100, 100));
        assert!(!keeps_gradients(Strategy::Direct, 16, KEPT_GRADIENTS_CAP_BYTES - 100, 101));
        assert_eq!(kept_sum_flops(10), 20);
    }
}
