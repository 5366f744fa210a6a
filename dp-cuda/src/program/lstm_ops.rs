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

pub(super) fn forward_step(
    ops: &GpuOps<'_>,
    s: &LstmForwardStep,
    dims: &LstmDims,
    n: usize,
    t: usize,
) -> Outcome {
    let (steps, h) = (dims.steps, dims.hidden);
    let (per_step, g4) = (n * steps * h, 4 * h);
    in_sequence("lstm_forward_step", dims, t)?;
    ops.check(
        "lstm_forward_step",
        &[
            (s.saved.gates, 4 * per_step),
            (s.saved.cells, per_step),
            (s.saved.hprev, per_step),
            (s.out, per_step),
            (s.bias, g4),
            (s.recurrent, if t > 0 { n * g4 } else { 0 }),
            (s.hidden, n * h),
        ],
    )?;
    if n * h == 0 {
        return Ok(());
    }
    let m = ops.memory;
    let (gates, cells, hprev) =
        (m.values(s.saved.gates)?, m.values(s.saved.cells)?, m.values(s.saved.hprev)?);
    let (out, hidden, recurrent, bias) =
        (m.values(s.out)?, m.values(s.hidden)?, m.values(s.recurrent)?, m.ptr(s.bias)?);
    let (n64, steps, h64, t) = (n as u64, steps as u64, h as u64, t as u64);
    launch!(ops, k::LSTM_FORWARD_STEP, "dp_lstm_forward_step", elementwise(n * h);
        &gates, &cells, &hprev, &out, &hidden, &recurrent, &bias, &n64, &steps, &h64, &t)
}

pub(super) fn backward_step(
    ops: &GpuOps<'_>,
    s: &LstmBackwardStep,
    dims: &LstmDims,
    n: usize,
    t: usize,
) -> Outcome {
    let (steps, h) = (dims.steps, dims.hidden);
    let (per_step, g4, last) = (n * steps * h, 4 * h, t + 1 == dims.steps);
    in_sequence("lstm_backward_step", dims, t)?;
    ops.check(
        "lstm_backward_step",
        &[
            (s.gates, 4 * per_step),
            (s.cells, per_step),
            (s.dout, per_step),
            (s.recurrent, if last { 0 } else { n * h }),
            (s.cell_grad, n * h),
            (s.step_delta, n * g4),
            (s.delta, 4 * per_step),
        ],
    )?;
    if n * h == 0 {
        return Ok(());
    }
    let m = ops.memory;
    let (gates, cells, dout, recurrent) =
        (m.values(s.gates)?, m.values(s.cells)?, m.values(s.dout)?, m.values(s.recurrent)?);
    let (cell_grad, step_delta, delta) =
        (m.values(s.cell_grad)?, m.values(s.step_delta)?, m.values(s.delta)?);
    let (n64, steps, h64, t) = (n as u64, steps as u64, h as u64, t as u64);
    launch!(ops, k::LSTM_BACKWARD_STEP, "dp_lstm_backward_step", elementwise(n * h);
        &gates, &cells, &dout, &recurrent, &cell_grad, &step_delta, &delta, &n64, &steps, &h64, &t)
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
    let (steps, h) = (dims.steps, dims.hidden);
    let (per_step, g4) = (n * steps * h, 4 * h);
    ops.check(
        "lstm_forward",
        &[
            (s.saved.gates, 4 * per_step),
            (s.saved.cells, per_step),
            (s.saved.hprev, per_step),
            (s.out, per_step),
            (s.bias, g4),
            (s.recurrent, if steps > 1 { n * g4 } else { 0 }),
            (s.hidden, n * h),
            (w_hh, g4 * h),
        ],
    )?;
    if per_step == 0 {
        return Ok(());
    }
    let m = ops.memory;
    let (gates, cells, hprev) =
        (m.values(s.saved.gates)?, m.values(s.saved.cells)?, m.values(s.saved.hprev)?);
    let (out, hidden, recurrent) = (m.values(s.out)?, m.values(s.hidden)?, m.values(s.recurrent)?);
    let (bias, w) = (m.ptr(s.bias)?, m.ptr(w_hh)?);
    let (round, n64, steps, h64) = (rounds(ops), n as u64, steps as u64, h as u64);
    launch!(ops, k::LSTM_FORWARD_FUSED, "dp_lstm_forward_fused", per_example(n);
        &gates, &cells, &hprev, &out, &hidden, &recurrent, &bias, &w, &round, &n64, &steps, &h64)
}

pub(super) fn backward_fused(
    ops: &GpuOps<'_>,
    s: &LstmBackwardStep,
    w_hh: Span,
    dims: &LstmDims,
    n: usize,
) -> Outcome {
    let (steps, h) = (dims.steps, dims.hidden);
    let (per_step, g4) = (n * steps * h, 4 * h);
    ops.check(
        "lstm_backward",
        &[
            (s.gates, 4 * per_step),
            (s.cells, per_step),
            (s.dout, per_step),
            (s.recurrent, if steps > 1 { n * h } else { 0 }),
            (s.cell_grad, n * h),
            (s.step_delta, n * g4),
            (s.delta, 4 * per_step),
            (w_hh, g4 * h),
        ],
    )?;
    if per_step == 0 {
        return Ok(());
    }
    let m = ops.memory;
    let (gates, cells, dout, recurrent) =
        (m.values(s.gates)?, m.values(s.cells)?, m.values(s.dout)?, m.values(s.recurrent)?);
    let (cell_grad, step_delta, delta) =
        (m.values(s.cell_grad)?, m.values(s.step_delta)?, m.values(s.delta)?);
    let w = m.ptr(w_hh)?;
    let (round, n64, steps, h64) = (rounds(ops), n as u64, steps as u64, h as u64);
    launch!(ops, k::LSTM_BACKWARD_FUSED, "dp_lstm_backward_fused", per_example(n);
        &gates, &cells, &dout, &recurrent, &cell_grad, &step_delta, &delta, &w, &round, &n64, &steps, &h64)
}
