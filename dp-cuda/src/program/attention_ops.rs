//! The bodies of [`GpuOps`]' attention primitives (`DeviceOps::gemm_batched_rows`,
//! `attention_softmax`, `attention_softmax_backward` and `fill`): products over matrices stored inside
//! wider rows through cuBLAS's strided batched GEMM with those row lengths as leading dimensions, the
//! rest through `kernels/attention.cu` (one warp per row of the softmax), whose buffers are
//! `dp_values`: each span passed with its stored type (f32 or bf16). Each checks its spans against the
//! shapes (and, through [`RegionMemory::values`](super::RegionMemory::values), against their regions)
//! before it queues anything.

use cudarc::driver::PushKernelArg;
use dp_runtime::device::{DeviceError, Span};

use super::{backend, elementwise, k, GpuOps};

type Outcome = std::result::Result<(), DeviceError>;

pub(super) fn softmax(
    ops: &GpuOps<'_>,
    scores: Span,
    (blocks, steps): (usize, usize),
    scale: f32,
    causal: bool,
) -> Outcome {
    let rows = blocks * steps;
    ops.check("attention_softmax", &[(scores, rows * steps)])?;
    if rows == 0 {
        return Ok(());
    }
    let (s, rows64, steps64, causal) =
        (ops.memory.values(scores)?, rows as u64, steps as u64, i32::from(causal));
    // A warp per row.
    launch!(ops, k::ATTENTION_SOFTMAX, "dp_attention_softmax", elementwise(rows * 32);
        &s, &rows64, &steps64, &scale, &causal)
}

pub(super) fn softmax_backward(
    ops: &GpuOps<'_>,
    probs: Span,
    grad: Span,
    (blocks, steps): (usize, usize),
    scale: f32,
) -> Outcome {
    let rows = blocks * steps;
    ops.check("attention_softmax_backward", &[(probs, rows * steps), (grad, rows * steps)])?;
    if rows == 0 {
        return Ok(());
    }
    let (p, g, rows64, steps64) =
        (ops.memory.values(probs)?, ops.memory.values(grad)?, rows as u64, steps as u64);
    launch!(ops, k::ATTENTION_SOFTMAX_BACKWARD, "dp_attention_softmax_backward", elementwise(rows * 32);
        &p, &g, &rows64, &steps64, &scale)
}

pub(super) fn fill(ops: &GpuOps<'_>, dst: Span, len: usize, value: f32) -> Outcome {
    ops.check("fill", &[(dst, len)])?;
    if len == 0 {
        return Ok(());
    }
    let (d, len64) = (ops.memory.values(dst)?, len as u64);
    launch!(ops, k::FILL, "dp_fill", elementwise(len); &d, &len64, &value)
}
