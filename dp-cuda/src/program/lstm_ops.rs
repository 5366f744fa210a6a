//! The bodies of [`GpuOps`]' LSTM primitives through `kernels/lstm.cu`: `DeviceOps::lstm_forward_step`
//! and `lstm_backward_step`, one thread per (example, unit) of one time step; and the whole
//! recurrence each way (`lstm_forward`, `lstm_backward`) as one kernel, one block per example.
//! Each checks the step against the sequence and its spans against the shapes (and, through
//! [`RegionMemory::values`](super::RegionMemory::values) and
//! [`RegionMemory::ptr`](super::RegionMemory::ptr), against their regions) before it queues anything.
//! Every span but the bias (a parameter, f32) is in the arena, so it goes to the kernels tagged with
//! its stored type (`dp_values`, docs/GPU.md "bf16 storage"): the compiler stores the hidden states
//! and their gradients in the precision, the rest of the recurrence in f32.

use cudarc::driver::{LaunchConfig, PushKernelArg};
use dp_runtime::device::{DeviceError, LstmBackwardStep, LstmDims, LstmForwardStep, Precision, Span};

use super::{backend, elementwise, k, GpuOps};
use crate::lstm::LSTM_BLOCK_THREADS;

type Outcome = std::result::Result<(), DeviceError>;

fn in_sequence(what: &str, dims: &LstmDims, t: usize) -> Outcome {
    if t < dims.steps {
        Ok(())
    } else {
        Err(DeviceError::Mismatch(format!("{what}: step {t} of {}", dims.steps)))
    }
}

/// A forward's buffers as its kernels take them: the arena spans tagged with their stored type, the
/// bias (a parameter, f32) a plain address.
struct ForwardBuffers {
    gates: u64,
    cells: u64,
    hprev: u64,
    out: u64,
    hidden: u64,
    recurrent: u64,
    bias: u64,
}

/// The forward's spans checked against the shapes (`recurrent` values of `s.recurrent` read: none at
/// a first step only), then their addresses; `None` when there is nothing to compute.
fn forward_buffers(
    ops: &GpuOps<'_>,
    what: &str,
    s: &LstmForwardStep,
    dims: &LstmDims,
    n: usize,
    recurrent: usize,
) -> std::result::Result<Option<ForwardBuffers>, DeviceError> {
    let (per_step, g4) = (n * dims.steps * dims.hidden, 4 * dims.hidden);
    ops.check(
        what,
        &[
            (s.saved.gates, 4 * per_step),
            (s.saved.cells, per_step),
            (s.saved.hprev, per_step),
            (s.out, per_step),
            (s.bias, g4),
            (s.recurrent, recurrent),
            (s.hidden, n * dims.hidden),
        ],
    )?;
    if per_step == 0 {
        return Ok(None);
    }
    let m = ops.memory;
    Ok(Some(ForwardBuffers {
        gates: m.values(s.saved.gates)?,
        cells: m.values(s.saved.cells)?,
        hprev: m.values(s.saved.hprev)?,
        out: m.values(s.out)?,
        hidden: m.values(s.hidden)?,
        recurrent: m.values(s.recurrent)?,
        bias: m.ptr(s.bias)?,
    }))
}

/// A backward's buffers as its kernels take them, every one an arena span tagged with its type.
struct BackwardBuffers {
    gates: u64,
    cells: u64,
    dout: u64,
    recurrent: u64,
    cell_grad: u64,
    step_delta: u64,
    delta: u64,
}

/// The backward's spans checked against the shapes (`recurrent` values of `s.recurrent` read: none
/// at a last step only), then their addresses; `None` when there is nothing to compute.
fn backward_buffers(
    ops: &GpuOps<'_>,
    what: &str,
    s: &LstmBackwardStep,
    dims: &LstmDims,
    n: usize,
    recurrent: usize,
) -> std::result::Result<Option<BackwardBuffers>, DeviceError> {
    let (per_step, g4) = (n * dims.steps * dims.hidden, 4 * dims.hidden);
    ops.check(
        what,
        &[
            (s.gates, 4 * per_step),
            (s.cells, per_step),
            (s.dout, per_step),
            (s.recurrent, recurrent),
            (s.cell_grad, n * dims.hidden),
            (s.step_delta, n * g4),
            (s.delta, 4 * per_step),
        ],
    )?;
    if per_step == 0 {
        return Ok(None);
    }
    let m = ops.memory;
    Ok(Some(BackwardBuffers {
        gates: m.values(s.gates)?,
        cells: m.values(s.cells)?,
        dout: m.values(s.dout)?,
        recurrent: m.values(s.recurrent)?,
        cell_grad: m.values(s.cell_grad)?,
        step_delta: m.values(s.step_delta)?,
        delta: m.values(s.delta)?,
    }))
}

pub(super) fn forward_step(
    ops: &GpuOps<'_>,
    s: &LstmForwardStep,
    dims: &LstmDims,
    n: usize,
    t: usize,
) -> Outcome {
    in_sequence("lstm_forward_step", dims, t)?;
    let recurrent = if t > 0 { n * 4 * dims.hidden } else { 0 };
    let Some(b) = forward_buffers(ops, "lstm_forward_step", s, dims, n, recurrent)? else { return Ok(()) };
    let (n64, steps, h64, t) = (n as u64, dims.steps as u64, dims.hidden as u64, t as u64);
    launch!(ops, k::LSTM_FORWARD_STEP, "dp_lstm_forward_step", elementwise(n * dims.hidden);
        &b.gates, &b.cells, &b.hprev, &b.out, &b.hidden, &b.recurrent, &b.bias, &n64, &steps, &h64, &t)
}

pub(super) fn backward_step(
    ops: &GpuOps<'_>,
    s: &LstmBackwardStep,
    dims: &LstmDims,
    n: usize,
    t: usize,
) -> Outcome {
    in_sequence("lstm_backward_step", dims, t)?;
    let recurrent = if t + 1 == dims.steps { 0 } else { n * dims.hidden };
    let Some(b) = backward_buffers(ops, "lstm_backward_step", s, dims, n, recurrent)? else { return Ok(()) };
    let (n64, steps, h64, t) = (n as u64, dims.steps as u64, dims.hidden as u64, t as u64);
    launch!(ops, k::LSTM_BACKWARD_STEP, "dp_lstm_backward_step", elementwise(n * dims.hidden);
        &b.gates, &b.cells, &b.dout, &b.recurrent, &b.cell_grad, &b.step_delta, &b.delta, &n64, &steps, &h64, &t)
}

/// One block per example (at most 65,535 blocks; the kernels stride over the rest).
fn per_example(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.clamp(1, 65_535) as u32, 1, 1),
        block_dim: (LSTM_BLOCK_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Whether the recurrent products round their operands: a product marked `OfPrecision` in bf16.
fn rounds(ops: &GpuOps<'_>) -> i32 {
    match ops.precision {
        Precision::Bf16 => 1,
        Precision::F32 => 0,
    }
}

pub(super) fn forward_fused(
    ops: &GpuOps<'_>,
    s: &LstmForwardStep,
    w_hh: Span,
    dims: &LstmDims,
    n: usize,
) -> Outcome {
    let (h, g4) = (dims.hidden, 4 * dims.hidden);
    let recurrent = if dims.steps > 1 { n * g4 } else { 0 };
    ops.check("lstm_forward", &[(w_hh, g4 * h)])?;
    let Some(b) = forward_buffers(ops, "lstm_forward", s, dims, n, recurrent)? else { return Ok(()) };
    let w = ops.memory.ptr(w_hh)?;
    let (round, n64, steps, h64) = (rounds(ops), n as u64, dims.steps as u64, h as u64);
    launch!(ops, k::LSTM_FORWARD_FUSED, "dp_lstm_forward_fused", per_example(n);
        &b.gates, &b.cells, &b.hprev, &b.out, &b.hidden, &b.recurrent, &b.bias, &w, &round, &n64, &steps, &h64)
}

pub(super) fn backward_fused(
    ops: &GpuOps<'_>,
    s: &LstmBackwardStep,
    w_hh: Span,
    dims: &LstmDims,
    n: usize,
) -> Outcome {
    let h = dims.hidden;
    let recurrent = if dims.steps > 1 { n * h } else { 0 };
    ops.check("lstm_backward", &[(w_hh, 4 * h * h)])?;
    let Some(b) = backward_buffers(ops, "lstm_backward", s, dims, n, recurrent)? else { return Ok(()) };
    let w = ops.memory.ptr(w_hh)?;
    let (round, n64, steps, h64) = (rounds(ops), n as u64, dims.steps as u64, h as u64);
    launch!(ops, k::LSTM_BACKWARD_FUSED, "dp_lstm_backward_fused", per_example(n);
        &b.gates, &b.cells, &b.dout, &b.recurrent, &b.cell_grad, &b.step_delta, &b.delta, &w, &round, &n64, &steps,
        &h64)
}
