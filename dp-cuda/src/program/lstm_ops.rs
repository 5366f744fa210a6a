//! The bodies of [`GpuOps`]' LSTM primitives (`DeviceOps::lstm_forward_step` and
//! `lstm_backward_step`) through `kernels/lstm.cu`: one thread per (example, unit) of one time step.
//! Each checks the step against the sequence and its spans against the shapes (and, through
//! [`RegionMemory::ptr`](super::RegionMemory::ptr), against their regions) before it queues anything.

use cudarc::driver::PushKernelArg;
use dp_runtime::device::{DeviceError, LstmBackwardStep, LstmDims, LstmForwardStep};

use super::{backend, elementwise, k, GpuOps};

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
    let (gates, cells, hprev) = (m.ptr(s.saved.gates)?, m.ptr(s.saved.cells)?, m.ptr(s.saved.hprev)?);
    let (out, hidden, recurrent, bias) =
        (m.ptr(s.out)?, m.ptr(s.hidden)?, m.ptr(s.recurrent)?, m.ptr(s.bias)?);
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
        (m.ptr(s.gates)?, m.ptr(s.cells)?, m.ptr(s.dout)?, m.ptr(s.recurrent)?);
    let (cell_grad, step_delta, delta) = (m.ptr(s.cell_grad)?, m.ptr(s.step_delta)?, m.ptr(s.delta)?);
    let (n64, steps, h64, t) = (n as u64, steps as u64, h as u64, t as u64);
    launch!(ops, k::LSTM_BACKWARD_STEP, "dp_lstm_backward_step", elementwise(n * h);
        &gates, &cells, &dout, &recurrent, &cell_grad, &step_delta, &delta, &n64, &steps, &h64, &t)
}
