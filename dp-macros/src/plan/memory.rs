//! The static memory plan: every buffer is a per-example length at a per-example offset of one arena;
//! at run time a buffer of a batch of B lives at `offset·B .. (offset + len)·B`.

/// Where a value lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buf {
    /// The caller's input slice.
    Input,
    /// Buffer `k` of the memory plan.
    Arena(usize),
}

/// One buffer of the arena, per example.
#[derive(Debug, Clone)]
pub struct Buffer {
    /// What it holds, e.g. `fc1 output` (for the plan's documentation).
    pub purpose: String,
    /// Offset in `f32`s per example (times B at run time).
    pub offset: usize,
    /// Length in `f32`s per example.
    pub len: usize,
    /// What a device storing in bf16 stores it as (the CPU stores every buffer in f32).
    pub stored: Stored,
}

/// A buffer's class on a device that stores in bf16 (`dp_runtime::device::Stored`, the same two
/// cases): every span of the buffer the device program emits carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// f32 whatever the precision: what a rounding would corrupt (kept per-example gradients, the
    /// clipping scratch of `c·δ`, normalisation statistics, argmax indices, an LSTM's gates and cells).
    F32,
    /// In the device's precision: activations and output gradients.
    OfPrecision,
}

/// Where a step's backward writes the gradient of one of its inputs: it overwrites `write`, then,
/// when the input has another reader, `write` is added into the input's own gradient `add_into`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GradTarget {
    pub write: usize,
    pub add_into: Option<usize>,
}

/// Shared scratch buffers, each sized to the largest need of any layer (`None` when no layer needs it).
#[derive(Debug, Clone, Copy, Default)]
pub struct Scratch {
    /// `f32`s of one task's slot of conv patches (one example's `[groups][d][T]`, im2col), also a
    /// slot of the conv input-gradient kernel; 0 when no layer unfolds. Not an arena buffer: the
    /// workspace holds `dp_spec::cost::TASKS_PER_THREAD` slots per thread after the per-example ones.
    pub patches_per_task: usize,
    /// Conv output gradients as rows `[groups][B][T][p]`.
    pub rows: Option<usize>,
    /// One slot per example of the chosen norm kernels (ghost Gram tiles or a direct gradient).
    pub norms: Option<usize>,
}
