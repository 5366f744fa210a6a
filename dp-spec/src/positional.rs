//! The static shape of a layer applied at T positions of one example.

use crate::cost;
use crate::Strategy;

/// How one example's `A` (`T×d`, the layer's inputs) and `Δ` (`T×p`, its output gradients) are
/// stored, group by group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RowLayout {
    /// `A` is `[T][d]`, `Δ` `[T][p]`: one row per position (a sequence's rows, a linear layer's input).
    PositionMajor,
    /// `A` is `[d][T]`, `Δ` `[p][T]`: one row per channel (a conv's channel-major patches and its NCHW
    /// output gradient).
    ChannelMajor,
}

/// A layer whose weight (`p×d` per group) is applied at `positions` positions per example: a conv at
/// every output pixel, an LSTM weight at every step, a linear layer once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PositionalLayer {
    /// T: positions per example (output pixels, time steps; 1 for a linear layer).
    pub positions: usize,
    /// d: input width of one group at one position.
    pub in_width: usize,
    /// p: output width of one group at one position.
    pub out_width: usize,
    /// Independent blocks (grouped convolution); 1 for most layers.
    pub groups: usize,
    /// How `A` and `Δ` are stored; the costs do not depend on it.
    pub layout: RowLayout,
}

impl PositionalLayer {
    /// A layer with a single group, stored position-major.
    pub const fn new(positions: usize, in_width: usize, out_width: usize) -> Self {
        PositionalLayer { positions, in_width, out_width, groups: 1, layout: RowLayout::PositionMajor }
    }

    /// Values of `A` per example (all groups).
    pub const fn a_len(&self) -> usize {
        self.groups * self.positions * self.in_width
    }

    /// Values of `Δ` per example (all groups).
    pub const fn delta_len(&self) -> usize {
        self.groups * self.positions * self.out_width
    }

    /// Values of the weight gradient (all groups).
    pub const fn weight_len(&self) -> usize {
        self.groups * self.out_width * self.in_width
    }

    /// Values of the bias gradient (all groups).
    pub const fn bias_len(&self) -> usize {
        self.groups * self.out_width
    }

    /// Multiply-adds ×2 of the ghost norm for one example.
    pub fn ghost_flops(&self) -> u64 {
        self.groups as u64 * cost::ghost_flops(self.positions, self.in_width, self.out_width)
    }

    /// Multiply-adds ×2 of the direct norm for one example.
    pub fn direct_flops(&self) -> u64 {
        self.groups as u64 * cost::direct_flops(self.positions, self.in_width, self.out_width)
    }

    /// The strategy [`cost::choose_strategy`] picks for this layer (per group shapes; the cap is per
    /// example).
    pub fn choose_strategy(&self, memory_cap_bytes: u64) -> Strategy {
        cost::choose_strategy(self.positions, self.in_width, self.out_width, memory_cap_bytes)
    }
}
