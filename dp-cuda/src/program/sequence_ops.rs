//! The bodies of [`GpuOps`]' sequence primitives (`DeviceOps::embedding_forward`, `embedding_norms`,
//! `embedding_scatter`, `sequence_sums`, `sequence_broadcast`) through `kernels/sequence.cu`. Each
//! checks its spans against the shapes (and, through
//! [`RegionMemory::values`](super::RegionMemory::values) and
//! [`RegionMemory::ptr`](super::RegionMemory::ptr), against their regions) before it queues anything.
//! The gathered rows, the output gradient and both sides of a sum or broadcast over time go to the
//! kernels tagged with their stored type (`dp_values`, f32 or bf16, docs/GPU.md "bf16 storage"); the
//! ids, the table, the squared norms, the factors and the table's gradient are outside the arena, f32.

use cudarc::driver::{LaunchConfig, PushKernelArg};
use dp_runtime::device::{check_group, DeviceError, Span};

use super::{backend, elementwise, k, GpuOps};

type Outcome = std::result::Result<(), DeviceError>;

/// The gather: one thread per output value.
pub(super) fn embedding_forward(
    ops: &GpuOps<'_>,
    (ids, table, out): (Span, Span, Span),
    (n, steps, vocab, dim): (usize, usize, usize, usize),
) -> Outcome {
    let len = n * steps * dim;
    ops.check("embedding_forward", &[(ids, n * steps), (table, vocab * dim), (out, len)])?;
    if len == 0 {
        return Ok(());
    }
    let (i, t, o) = (ops.memory.ptr(ids)?, ops.memory.ptr(table)?, ops.memory.values(out)?);
    let (n, s, v, d) = (n as u64, steps as u64, vocab as u64, dim as u64);
    launch!(ops, k::EMBEDDING_FORWARD, "dp_embedding_forward", elementwise(len); &i, &t, &n, &s, &v, &d, &o)
}

/// The token-grouped norms: one block of 256 threads per example, at most 65 535 blocks (the kernel
/// strides over the rest).
pub(super) fn embedding_norms(
    ops: &GpuOps<'_>,
    (ids, delta): (Span, Span),
    (n, steps, dim): (usize, usize, usize),
    (sq_norms, groups, group): (Span, usize, usize),
) -> Outcome {
    ops.check("embedding_norms", &[(ids, n * steps), (delta, n * steps * dim), (sq_norms, n * groups)])?;
    check_group("embedding_norms", groups, group)?;
    if n == 0 {
        return Ok(());
    }
    let (i, d, q) = (ops.memory.ptr(ids)?, ops.memory.values(delta)?, ops.memory.ptr(sq_norms)?);
    let (n64, s, dm, gs, g) = (n as u64, steps as u64, dim as u64, groups as u64, group as u64);
    let config =
        LaunchConfig { grid_dim: (n.min(65_535) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    launch!(ops, k::EMBEDDING_NORMS, "dp_embedding_norms", config; &i, &d, &n64, &s, &dm, &q, &gs, &g)
}

/// The scatter-add: one thread per position and column.
pub(super) fn embedding_scatter(
    ops: &GpuOps<'_>,
    (ids, delta, grad): (Span, Span, Span),
    (n, steps, vocab, dim): (usize, usize, usize, usize),
    factors: Option<(Span, usize, usize)>,
) -> Outcome {
    let len = n * steps * dim;
    ops.check("embedding_scatter", &[(ids, n * steps), (delta, len), (grad, vocab * dim)])?;
    let (f, has, groups, group) = match factors {
        Some((f, groups, group)) => {
            ops.check("embedding_scatter", &[(f, n * groups)])?;
            check_group("embedding_scatter", groups, group)?;
            (ops.memory.ptr(f)?, 1i32, groups as u64, group as u64)
        }
        // Never read (has_factors 0): any f32 address, the gradient's (δ may be stored in bf16).
        None => (ops.memory.ptr(grad)?, 0, 1, 0),
    };
    if len == 0 {
        return Ok(());
    }
    let (i, d, g) = (ops.memory.ptr(ids)?, ops.memory.values(delta)?, ops.memory.ptr(grad)?);
    let (n, s, v, dm) = (n as u64, steps as u64, vocab as u64, dim as u64);
    launch!(ops, k::EMBEDDING_SCATTER, "dp_embedding_scatter", elementwise(len);
        &i, &d, &n, &s, &v, &dm, &f, &has, &groups, &group, &g)
}

/// Sums over time: one thread per output value, summing its column over the steps.
pub(super) fn sequence_sums(
    ops: &GpuOps<'_>,
    src: Span,
    (n, steps, cols): (usize, usize, usize),
    scale: f32,
    dst: Span,
) -> Outcome {
    ops.check("sequence_sums", &[(src, n * steps * cols), (dst, n * cols)])?;
    if n * cols == 0 {
        return Ok(());
    }
    let (s, d) = (ops.memory.values(src)?, ops.memory.values(dst)?);
    let (n64, t, c) = (n as u64, steps as u64, cols as u64);
    launch!(ops, k::SEQUENCE_SUMS, "dp_sequence_sums", elementwise(n * cols); &s, &n64, &t, &c, &scale, &d)
}

/// The broadcast over time: one thread per output value.
pub(super) fn sequence_broadcast(
    ops: &GpuOps<'_>,
    src: Span,
    (n, steps, cols): (usize, usize, usize),
    scale: f32,
    dst: Span,
) -> Outcome {
    let len = n * steps * cols;
    ops.check("sequence_broadcast", &[(src, n * cols), (dst, len)])?;
    if len == 0 {
        return Ok(());
    }
    let (s, d) = (ops.memory.values(src)?, ops.memory.values(dst)?);
    let (n64, t, c) = (n as u64, steps as u64, cols as u64);
    launch!(ops, k::SEQUENCE_BROADCAST, "dp_sequence_broadcast", elementwise(len); &s, &n64, &t, &c, &scale, &d)
}
