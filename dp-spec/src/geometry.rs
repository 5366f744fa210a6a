//! The static shapes of the layers whose kernels take a geometry value: the compiler plans buffers and
//! FLOPs with these methods and emits the same values as literals for the kernels.

use crate::{PositionalLayer, RowLayout};

/// A conv folds chunks of examples only below this many output positions ([`Conv2dGeometry::folds`]).
pub const FOLD_BELOW_POSITIONS: usize = 64;

/// Folding pays where the output channels outnumber the positions this many times over.
pub const FOLD_CHANNELS_PER_POSITION: usize = 4;

/// The static shape of a convolution (square stride, padding and dilation, PyTorch's defaults 1, 0, 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conv2dGeometry {
    /// Input channels.
    pub in_c: usize,
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
    /// Output channels.
    pub out_c: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Step between neighbouring windows.
    pub stride: usize,
    /// Zeros added on every side.
    pub padding: usize,
    /// Step between kernel taps.
    pub dilation: usize,
    /// Channel groups; `in_c` and `out_c` are multiples of it.
    pub groups: usize,
}

impl Conv2dGeometry {
    /// Why the geometry cannot be convolved, or `Ok` (checked by the compiler before any kernel runs;
    /// the kernels assert it).
    pub fn validate(&self) -> Result<(), String> {
        if self.in_c == 0 || self.in_h == 0 || self.in_w == 0 || self.out_c == 0 {
            return Err("conv2d: channels and input size must be positive".into());
        }
        if self.kh == 0 || self.kw == 0 {
            return Err("conv2d: kernel size must be positive".into());
        }
        if self.stride == 0 {
            return Err("conv2d: stride must be positive".into());
        }
        if self.dilation == 0 {
            return Err("conv2d: dilation must be positive".into());
        }
        if self.groups == 0
            || !self.in_c.is_multiple_of(self.groups)
            || !self.out_c.is_multiple_of(self.groups)
        {
            return Err(format!(
                "conv2d: groups = {} must divide in channels {} and out channels {}",
                self.groups, self.in_c, self.out_c
            ));
        }
        let span_h = self.dilation * (self.kh - 1) + 1;
        let span_w = self.dilation * (self.kw - 1) + 1;
        if span_h > self.in_h + 2 * self.padding || span_w > self.in_w + 2 * self.padding {
            return Err(format!(
                "conv2d: kernel spans {span_h}x{span_w} but the padded input is {}x{}",
                self.in_h + 2 * self.padding,
                self.in_w + 2 * self.padding
            ));
        }
        Ok(())
    }

    /// Output height: `(in_h + 2·padding − dilation·(kh−1) − 1) / stride + 1`.
    pub const fn out_h(&self) -> usize {
        (self.in_h + 2 * self.padding - self.dilation * (self.kh - 1) - 1) / self.stride + 1
    }

    /// Output width.
    pub const fn out_w(&self) -> usize {
        (self.in_w + 2 * self.padding - self.dilation * (self.kw - 1) - 1) / self.stride + 1
    }

    /// T: output positions per example.
    pub const fn positions(&self) -> usize {
        self.out_h() * self.out_w()
    }

    /// d: values of one patch of one group, `(in_c/groups)·kh·kw`.
    pub const fn patch_len(&self) -> usize {
        self.in_c / self.groups * self.kh * self.kw
    }

    /// Output channels of one group.
    pub const fn out_per_group(&self) -> usize {
        self.out_c / self.groups
    }

    /// Whether the conv's passes fold a chunk's examples into one product per group
    /// (`dp_kernels::conv_folded`): few positions ([`FOLD_BELOW_POSITIONS`]) and many output channels
    /// per group against them ([`FOLD_CHANNELS_PER_POSITION`]). Only such a conv needs the shared
    /// output-gradient rows, so the compiler plans them by this rule too.
    pub const fn folds(&self) -> bool {
        let t = self.positions();
        t < FOLD_BELOW_POSITIONS && self.out_per_group() >= FOLD_CHANNELS_PER_POSITION * t
    }

    /// Values of one example's input.
    pub const fn input_len(&self) -> usize {
        self.in_c * self.in_h * self.in_w
    }

    /// Values of one example's output.
    pub const fn output_len(&self) -> usize {
        self.out_c * self.positions()
    }

    /// Values of the weight, `out_c·(in_c/groups)·kh·kw`.
    pub const fn weight_len(&self) -> usize {
        self.out_c * self.patch_len()
    }

    /// Values of one example's patches (all groups), `T·in_c·kh·kw`.
    pub const fn patches_len(&self) -> usize {
        self.groups * self.positions() * self.patch_len()
    }

    /// The weight as a layer applied at T positions, for norms and clipped sums: its `A` is the
    /// channel-major patches, its `Δ` the NCHW output gradient of each group.
    pub const fn layer(&self) -> PositionalLayer {
        PositionalLayer {
            positions: self.positions(),
            in_width: self.patch_len(),
            out_width: self.out_per_group(),
            groups: self.groups,
            layout: RowLayout::ChannelMajor,
        }
    }

    /// FLOPs of the forward product for one example, `2·T·out_c·d`.
    pub const fn forward_flops(&self) -> u64 {
        2 * self.positions() as u64 * self.out_c as u64 * self.patch_len() as u64
    }

    /// Panics with [`Conv2dGeometry::validate`]'s reason (the kernels' precondition).
    pub fn assert_valid(&self) {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
    }
}

/// The static shape of a square pooling window over `channels` planes of `in_h × in_w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pool2dGeometry {
    /// Channels (planes pooled independently).
    pub channels: usize,
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
    /// Window side.
    pub kernel: usize,
    /// Step between windows (PyTorch's default is the kernel size).
    pub stride: usize,
    /// Implicit padding on every side.
    pub padding: usize,
}

impl Pool2dGeometry {
    /// Why the geometry cannot be pooled, or `Ok`.
    pub fn validate(&self) -> Result<(), String> {
        if self.channels == 0 || self.in_h == 0 || self.in_w == 0 {
            return Err("pool2d: channels and input size must be positive".into());
        }
        if self.kernel == 0 || self.stride == 0 {
            return Err("pool2d: kernel and stride must be positive".into());
        }
        if 2 * self.padding > self.kernel {
            return Err(format!("pool2d: padding {} exceeds half the kernel {}", self.padding, self.kernel));
        }
        if self.kernel > self.in_h + 2 * self.padding || self.kernel > self.in_w + 2 * self.padding {
            return Err(format!(
                "pool2d: kernel {} larger than the padded input {}x{}",
                self.kernel,
                self.in_h + 2 * self.padding,
                self.in_w + 2 * self.padding
            ));
        }
        Ok(())
    }

    /// Output height, `(in_h + 2·padding − kernel) / stride + 1`.
    pub const fn out_h(&self) -> usize {
        (self.in_h + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// Output width.
    pub const fn out_w(&self) -> usize {
        (self.in_w + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// Values of one example's input.
    pub const fn input_len(&self) -> usize {
        self.channels * self.in_h * self.in_w
    }

    /// Values of one example's output.
    pub const fn output_len(&self) -> usize {
        self.channels * self.out_h() * self.out_w()
    }

    /// Panics with [`Pool2dGeometry::validate`]'s reason (the kernels' precondition).
    pub fn assert_valid(&self) {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
    }
}

/// The static shape of an LSTM layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LstmDims {
    /// T: time steps.
    pub steps: usize,
    /// d: input width per step.
    pub input: usize,
    /// h: hidden units.
    pub hidden: usize,
}

impl LstmDims {
    /// Values of one example's input, `T·d`.
    pub const fn input_len(&self) -> usize {
        self.steps * self.input
    }

    /// Values of one example's output (also of `cells` and `hprev`), `T·h`.
    pub const fn output_len(&self) -> usize {
        self.steps * self.hidden
    }

    /// Values of one example's saved gates (also of `delta`), `T·4h`.
    pub const fn gates_len(&self) -> usize {
        self.steps * 4 * self.hidden
    }

    /// Values of `W_ih`, `4h·d`.
    pub const fn weight_ih_len(&self) -> usize {
        4 * self.hidden * self.input
    }

    /// Values of `W_hh`, `4h·h`.
    pub const fn weight_hh_len(&self) -> usize {
        4 * self.hidden * self.hidden
    }

    /// `W_ih` (and the bias) as a layer applied at T positions: `d → 4h`.
    pub const fn input_layer(&self) -> PositionalLayer {
        PositionalLayer::new(self.steps, self.input, 4 * self.hidden)
    }

    /// `W_hh` as a layer applied at T positions: `h → 4h`.
    pub const fn recurrent_layer(&self) -> PositionalLayer {
        PositionalLayer::new(self.steps, self.hidden, 4 * self.hidden)
    }

    /// FLOPs of one example's forward: the two products per step, `2·T·4h·(d+h)`.
    pub const fn forward_flops(&self) -> u64 {
        2 * self.steps as u64 * 4 * self.hidden as u64 * (self.input + self.hidden) as u64
    }
}
