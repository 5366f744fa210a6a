//! The bodies of [`GpuOps`]' primitives for a transformer's steps around its products
//! (`DeviceOps::activation_backward_from_input`, `copy_strided`, `patches_forward` and
//! `patches_backward`, `add_scaled_into`) through `kernels/transformer.cu`, one thread per value, whose
//! buffers are `dp_values`: each span passed with its own stored type (f32 or bf16, any mix). Each
//! checks its spans against the shapes (and, through
//! [`RegionMemory::values`](super::RegionMemory::values), against their regions) before it queues
//! anything.

use cudarc::driver::PushKernelArg;
use dp_kernels::activation::Activation;
use dp_runtime::device::{DeviceError, PatchDims, Span};

use super::{backend, elementwise, k, GpuOps};
use crate::dense::activation_code;

type Outcome = std::result::Result<(), DeviceError>;

pub(super) fn activation_backward_from_input(
    ops: &GpuOps<'_>,
    grad: Span,
    x: Span,
    len: usize,
    act: Activation,
) -> Outcome {
    ops.check("activation_backward_from_input", &[(grad, len), (x, len)])?;
    if len == 0 {
        return Ok(());
    }
    let (g, x, n, act) = (ops.memory.values(grad)?, ops.memory.values(x)?, len as u64, activation_code(act));
    launch!(ops, k::ACTIVATION_BACKWARD_FROM_INPUT, "dp_activation_backward_from_input", elementwise(len);
        &g, &x, &n, &act)
}

pub(super) fn copy_strided(
    ops: &GpuOps<'_>,
    (src, src_stride): (Span, usize),
    (dst, dst_stride): (Span, usize),
    rows: usize,
    cols: usize,
) -> Outcome {
    if src_stride < cols || dst_stride < cols {
        return Err(DeviceError::Mismatch(format!(
            "copy_strided: strides {src_stride} and {dst_stride} shorter than rows of {cols}"
        )));
    }
    if rows * cols == 0 {
        return Ok(());
    }
    let reach = |stride: usize| (rows - 1) * stride + cols;
    ops.check("copy_strided", &[(src, reach(src_stride)), (dst, reach(dst_stride))])?;
    let (s, d) = (ops.memory.values(src)?, ops.memory.values(dst)?);
    let (ss, ds, r, c) = (src_stride as u64, dst_stride as u64, rows as u64, cols as u64);
    launch!(ops, k::COPY_STRIDED, "dp_copy_strided", elementwise(rows * cols); &s, &ss, &d, &ds, &r, &c)
}

pub(super) fn patches(
    ops: &GpuOps<'_>,
    from: Span,
    dims: &PatchDims,
    n: usize,
    to: Span,
    forward: bool,
) -> Outcome {
    let &PatchDims { channels, height, width, size } = dims;
    if size == 0 || height % size != 0 || width % size != 0 {
        return Err(DeviceError::Mismatch(format!("patches of {size} do not tile {height}×{width}")));
    }
    let what = if forward { "patches_forward" } else { "patches_backward" };
    let len = n * dims.len();
    ops.check(what, &[(from, len), (to, len)])?;
    if len == 0 {
        return Ok(());
    }
    let (f, t) = (ops.memory.values(from)?, ops.memory.values(to)?);
    let (n64, c, h, w, p, to_patches) =
        (n as u64, channels as u64, height as u64, width as u64, size as u64, i32::from(forward));
    launch!(ops, k::PATCHES, "dp_patches", elementwise(len); &f, &t, &n64, &c, &h, &w, &p, &to_patches)
}

pub(super) fn add_scaled_into(ops: &GpuOps<'_>, dst: Span, src: Span, len: usize, scale: f32) -> Outcome {
    ops.check("add_scaled_into", &[(dst, len), (src, len)])?;
    if len == 0 {
        return Ok(());
    }
    let (d, s, n) = (ops.memory.values(dst)?, ops.memory.values(src)?, len as u64);
    launch!(ops, k::ADD_SCALED_INTO, "dp_add_scaled_into", elementwise(len); &d, &s, &n, &scale)
}
