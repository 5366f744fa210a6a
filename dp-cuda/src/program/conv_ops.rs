//! The bodies of [`GpuOps`]' convolution, pooling and kept-gradient primitives (the `DeviceOps`
//! methods from `gemm_batched` on): batched products through cuBLAS's strided batched GEMM, the rest
//! through `kernels/conv.cu`. Each checks its spans against the shapes (and, through
//! [`RegionMemory::values`](super::RegionMemory::values) and [`RegionMemory::ptr`](super::RegionMemory::ptr),
//! against their regions) before it queues anything. A kernel argument that may be an arena span is a
//! `dp_values` (its tagged address, f32 or bf16 as the span is stored); the bias, norms, factors and
//! max pooling's argmax are f32 (`ptr`, which refuses a span stored in bf16).

use cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use dp_kernels::activation::Activation;
use dp_runtime::device::{check_group, Conv2dGeometry, DeviceError, Pool2dGeometry, Precision, Span};

use super::{backend, elementwise, k, GpuOps, BF16_TAG};
use crate::conv::KEPT_NORM_THREADS;
use crate::dense::activation_code;

type Outcome = std::result::Result<(), DeviceError>;

/// `dp_conv_geometry` of conv.cu, passed by value (ten `u64`s, no padding).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct ConvGeometry {
    in_c: u64,
    in_h: u64,
    in_w: u64,
    kh: u64,
    kw: u64,
    stride: u64,
    padding: u64,
    dilation: u64,
    out_h: u64,
    out_w: u64,
}

// SAFETY: a `#[repr(C)]` struct of `u64`s, laid out as conv.cu's `dp_conv_geometry`.
unsafe impl DeviceRepr for ConvGeometry {}

impl ConvGeometry {
    /// A valid geometry, of any group count: the patches are the whole image's (every input channel's
    /// rows), a grouped conv's products reading each group's block of them.
    fn new(geom: &Conv2dGeometry) -> std::result::Result<Self, DeviceError> {
        geom.validate().map_err(DeviceError::Mismatch)?;
        let v = |x: usize| x as u64;
        Ok(ConvGeometry {
            in_c: v(geom.in_c),
            in_h: v(geom.in_h),
            in_w: v(geom.in_w),
            kh: v(geom.kh),
            kw: v(geom.kw),
            stride: v(geom.stride),
            padding: v(geom.padding),
            dilation: v(geom.dilation),
            out_h: v(geom.out_h()),
            out_w: v(geom.out_w()),
        })
    }
}

/// `dp_pool_geometry` of conv.cu, passed by value (eight `u64`s, no padding).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct PoolGeometry {
    channels: u64,
    in_h: u64,
    in_w: u64,
    kernel: u64,
    stride: u64,
    padding: u64,
    out_h: u64,
    out_w: u64,
}

// SAFETY: a `#[repr(C)]` struct of `u64`s, laid out as conv.cu's `dp_pool_geometry`.
unsafe impl DeviceRepr for PoolGeometry {}

impl PoolGeometry {
    /// A valid geometry whose indices within an example fit a `u32` (max pooling's argmax).
    fn new(geom: &Pool2dGeometry) -> std::result::Result<Self, DeviceError> {
        geom.validate().map_err(DeviceError::Mismatch)?;
        if geom.input_len() > u32::MAX as usize {
            return Err(DeviceError::Mismatch(format!(
                "a pool over {} values per example",
                geom.input_len()
            )));
        }
        let v = |x: usize| x as u64;
        Ok(PoolGeometry {
            channels: v(geom.channels),
            in_h: v(geom.in_h),
            in_w: v(geom.in_w),
            kernel: v(geom.kernel),
            stride: v(geom.stride),
            padding: v(geom.padding),
            out_h: v(geom.out_h()),
            out_w: v(geom.out_w()),
        })
    }
}

/// One warp per item over `items`: blocks of 256 threads (8 warps), at most 8192 of them (the kernels
/// stride over the rest).
fn per_warp(items: usize) -> LaunchConfig {
    let blocks = items.div_ceil(8).clamp(1, 8192) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
}

/// One block of `threads` per item, at most 65 535 blocks (the kernels stride over the rest).
fn per_block(items: usize, threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (items.clamp(1, 65_535) as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

pub(super) fn im2col(ops: &GpuOps<'_>, x: Span, geom: &Conv2dGeometry, n: usize, cols: Span) -> Outcome {
    let g = ConvGeometry::new(geom)?;
    let len = n * geom.patches_len();
    ops.check("im2col", &[(x, n * geom.input_len()), (cols, len)])?;
    let (x, c, n) = (ops.memory.values(x)?, ops.memory.values(cols)?, n as u64);
    launch!(ops, k::IM2COL, "dp_im2col", elementwise(len); &x, &g, &n, &c)
}

/// The clip factors' pointer, whether they are given, whether the values are rounded to bf16 (with
/// factors, in bf16: as the norms' products in bf16 read them), their groups and the column (any f32
/// address when none: the kernels do not read it then).
fn factors_arg(
    ops: &GpuOps<'_>,
    what: &'static str,
    factors: Option<(Span, usize, usize)>,
    n: usize,
    fallback: Span,
) -> std::result::Result<(u64, i32, i32, u64, u64), DeviceError> {
    match factors {
        Some((f, groups, group)) => {
            check_group(what, groups, group)?;
            ops.check(what, &[(f, n * groups)])?;
            let round = i32::from(ops.precision == Precision::Bf16);
            Ok((ops.memory.ptr(f)?, 1, round, groups as u64, group as u64))
        }
        None => Ok((ops.memory.values(fallback)? & !BF16_TAG, 0, 0, 1, 0)),
    }
}

pub(super) fn im2col_folded(
    ops: &GpuOps<'_>,
    (x, geom, n): (Span, &Conv2dGeometry, usize),
    factors: Option<(Span, usize, usize)>,
    cols: Span,
) -> Outcome {
    let g = ConvGeometry::new(geom)?;
    let len = n * geom.patches_len();
    ops.check("im2col_folded", &[(x, n * geom.input_len()), (cols, len)])?;
    let (f, has, round, groups, group) = factors_arg(ops, "im2col_folded", factors, n, cols)?;
    let (x, c, n) = (ops.memory.values(x)?, ops.memory.values(cols)?, n as u64);
    launch!(ops, k::IM2COL_FOLDED, "dp_im2col_folded", elementwise(len); &x, &g, &n, &f, &has, &round, &groups, &group, &c)
}

pub(super) fn fold_examples(
    ops: &GpuOps<'_>,
    src: Span,
    (n, rows, cols): (usize, usize, usize),
    factors: Option<(Span, usize, usize)>,
    dst: Span,
) -> Outcome {
    let len = n * rows * cols;
    ops.check("fold_examples", &[(src, len), (dst, len)])?;
    let (f, has, round, groups, group) = factors_arg(ops, "fold_examples", factors, n, dst)?;
    let (s, d) = (ops.memory.values(src)?, ops.memory.values(dst)?);
    let (n, rows, cols) = (n as u64, rows as u64, cols as u64);
    launch!(ops, k::FOLD_EXAMPLES, "dp_fold_examples", elementwise(len); &s, &n, &rows, &cols, &f, &has, &round, &groups, &group, &d)
}

pub(super) fn gram_sq_norms(
    ops: &GpuOps<'_>,
    (a, b, len): (Span, Span, usize),
    bias: Option<(Span, usize)>,
    n: usize,
    (sq_norms, groups, group): (Span, usize, usize),
) -> Outcome {
    check_group("gram_sq_norms", groups, group)?;
    ops.check("gram_sq_norms", &[(a, n * len), (b, n * len), (sq_norms, n * groups)])?;
    let (av, bv, q) = (ops.memory.values(a)?, ops.memory.values(b)?, ops.memory.ptr(sq_norms)?);
    let (bias, bias_len) = match bias {
        Some((s, l)) => {
            ops.check("gram_sq_norms", &[(s, n * l)])?;
            (ops.memory.values(s)?, l as u64)
        }
        None => (av, 0),
    };
    if n == 0 {
        return Ok(());
    }
    let (l, n64, gs, g) = (len as u64, n as u64, groups as u64, group as u64);
    launch!(ops, k::GRAM_SQ_NORMS, "dp_gram_sq_norms", per_block(n, KEPT_NORM_THREADS); &av, &bv, &l, &bias, &bias_len, &n64, &q, &gs, &g)
}

pub(super) fn col2im(ops: &GpuOps<'_>, cols: Span, geom: &Conv2dGeometry, n: usize, dx: Span) -> Outcome {
    let g = ConvGeometry::new(geom)?;
    let len = n * geom.input_len();
    ops.check("col2im", &[(cols, n * geom.patches_len()), (dx, len)])?;
    let (c, d, n) = (ops.memory.values(cols)?, ops.memory.values(dx)?, n as u64);
    launch!(ops, k::COL2IM, "dp_col2im", elementwise(len); &c, &g, &n, &d)
}

pub(super) fn channel_bias_activation(
    ops: &GpuOps<'_>,
    y: Span,
    bias: Option<Span>,
    (n, channels, positions): (usize, usize, usize),
    act: Activation,
) -> Outcome {
    let len = n * channels * positions;
    ops.check("channel_bias_activation", &[(y, len)])?;
    if let Some(b) = bias {
        ops.check("channel_bias_activation", &[(b, channels)])?;
    }
    let (y, has_bias) = (ops.memory.values(y)?, i32::from(bias.is_some()));
    // Without a bias the kernel never reads it: any f32 address will do.
    let bias = match bias {
        Some(b) => ops.memory.ptr(b)?,
        None => y & !BF16_TAG,
    };
    let (n, c, p, act) = (n as u64, channels as u64, positions as u64, activation_code(act));
    launch!(ops, k::CHANNEL_BIAS_ACTIVATION, "dp_channel_bias_activation", elementwise(len);
        &y, &bias, &has_bias, &n, &c, &p, &act)
}

pub(super) fn row_sums(ops: &GpuOps<'_>, src: Span, rows: usize, cols: usize, dst: Span) -> Outcome {
    ops.check("row_sums", &[(src, rows * cols), (dst, rows)])?;
    let (s, d, r, c) = (ops.memory.values(src)?, ops.memory.values(dst)?, rows as u64, cols as u64);
    launch!(ops, k::ROW_SUMS, "dp_row_sums", per_warp(rows); &s, &r, &c, &d)
}

pub(super) fn kept_sq_norms(
    ops: &GpuOps<'_>,
    (weight, weight_len): (Span, usize),
    bias: Option<(Span, usize)>,
    n: usize,
    (sq_norms, groups, group): (Span, usize, usize),
) -> Outcome {
    check_group("kept_sq_norms", groups, group)?;
    ops.check("kept_sq_norms", &[(weight, n * weight_len), (sq_norms, n * groups)])?;
    let (w, q) = (ops.memory.values(weight)?, ops.memory.ptr(sq_norms)?);
    let (b, bias_len) = match bias {
        Some((b, len)) => {
            ops.check("kept_sq_norms", &[(b, n * len)])?;
            (ops.memory.values(b)?, len as u64)
        }
        None => (w, 0),
    };
    if n == 0 {
        return Ok(());
    }
    let (wl, n64, gs, g) = (weight_len as u64, n as u64, groups as u64, group as u64);
    launch!(ops, k::KEPT_SQ_NORMS, "dp_kept_sq_norms", per_block(n, KEPT_NORM_THREADS); &w, &wl, &b, &bias_len, &n64, &q, &gs, &g)
}

pub(super) fn kept_weighted_sum(
    ops: &GpuOps<'_>,
    src: Span,
    n: usize,
    len: usize,
    factors: Option<(Span, usize, usize)>,
    dst: Span,
) -> Outcome {
    ops.check("kept_weighted_sum", &[(src, n * len), (dst, len)])?;
    let (s, d) = (ops.memory.values(src)?, ops.memory.values(dst)?);
    let (f, has, groups, group) = match factors {
        Some((f, groups, group)) => {
            check_group("kept_weighted_sum", groups, group)?;
            ops.check("kept_weighted_sum", &[(f, n * groups)])?;
            (ops.memory.ptr(f)?, 1i32, groups as u64, group as u64)
        }
        // Without factors the kernel never reads them: any f32 address will do.
        None => (s & !BF16_TAG, 0, 1, 0),
    };
    let (n, l) = (n as u64, len as u64);
    launch!(ops, k::KEPT_WEIGHTED_SUM, "dp_kept_weighted_sum", elementwise(len);
        &s, &n, &l, &f, &has, &groups, &group, &d)
}

pub(super) fn max_pool_forward(
    ops: &GpuOps<'_>,
    x: Span,
    geom: &Pool2dGeometry,
    n: usize,
    y: Span,
    argmax: Span,
) -> Outcome {
    let g = PoolGeometry::new(geom)?;
    let len = n * geom.output_len();
    ops.check("max_pool_forward", &[(x, n * geom.input_len()), (y, len), (argmax, len)])?;
    let (x, y, a, n) = (ops.memory.values(x)?, ops.memory.values(y)?, ops.memory.ptr(argmax)?, n as u64);
    launch!(ops, k::MAX_POOL_FORWARD, "dp_max_pool_forward", elementwise(len); &x, &g, &n, &y, &a)
}

pub(super) fn max_pool_backward(
    ops: &GpuOps<'_>,
    dy: Span,
    argmax: Span,
    geom: &Pool2dGeometry,
    n: usize,
    dx: Span,
) -> Outcome {
    let g = PoolGeometry::new(geom)?;
    let (outputs, len) = (n * geom.output_len(), n * geom.input_len());
    ops.check("max_pool_backward", &[(dy, outputs), (argmax, outputs), (dx, len)])?;
    let (dy, a, dx, n) = (ops.memory.values(dy)?, ops.memory.ptr(argmax)?, ops.memory.values(dx)?, n as u64);
    launch!(ops, k::MAX_POOL_BACKWARD, "dp_max_pool_backward", elementwise(len); &dy, &a, &g, &n, &dx)
}

pub(super) fn avg_pool_forward(
    ops: &GpuOps<'_>,
    x: Span,
    geom: &Pool2dGeometry,
    n: usize,
    y: Span,
) -> Outcome {
    let g = PoolGeometry::new(geom)?;
    let len = n * geom.output_len();
    ops.check("avg_pool_forward", &[(x, n * geom.input_len()), (y, len)])?;
    let (x, y, n) = (ops.memory.values(x)?, ops.memory.values(y)?, n as u64);
    launch!(ops, k::AVG_POOL_FORWARD, "dp_avg_pool_forward", elementwise(len); &x, &g, &n, &y)
}

pub(super) fn avg_pool_backward(
    ops: &GpuOps<'_>,
    dy: Span,
    geom: &Pool2dGeometry,
    n: usize,
    dx: Span,
) -> Outcome {
    let g = PoolGeometry::new(geom)?;
    let len = n * geom.input_len();
    ops.check("avg_pool_backward", &[(dy, n * geom.output_len()), (dx, len)])?;
    let (dy, dx, n) = (ops.memory.values(dy)?, ops.memory.values(dx)?, n as u64);
    launch!(ops, k::AVG_POOL_BACKWARD, "dp_avg_pool_backward", elementwise(len); &dy, &g, &n, &dx)
}

fn planes_of(what: &str, n: usize, channels: usize, plane: usize) -> std::result::Result<usize, DeviceError> {
    if plane == 0 {
        return Err(DeviceError::Mismatch(format!("{what}: empty planes")));
    }
    Ok(n * channels)
}

pub(super) fn global_avg_pool_forward(
    ops: &GpuOps<'_>,
    x: Span,
    (n, channels, plane): (usize, usize, usize),
    y: Span,
) -> Outcome {
    let planes = planes_of("global_avg_pool_forward", n, channels, plane)?;
    ops.check("global_avg_pool_forward", &[(x, planes * plane), (y, planes)])?;
    let (x, y, u, p) = (ops.memory.values(x)?, ops.memory.values(y)?, planes as u64, plane as u64);
    launch!(ops, k::GLOBAL_AVG_POOL_FORWARD, "dp_global_avg_pool_forward", per_warp(planes); &x, &u, &p, &y)
}

pub(super) fn global_avg_pool_backward(
    ops: &GpuOps<'_>,
    dy: Span,
    (n, channels, plane): (usize, usize, usize),
    dx: Span,
) -> Outcome {
    let planes = planes_of("global_avg_pool_backward", n, channels, plane)?;
    ops.check("global_avg_pool_backward", &[(dy, planes), (dx, planes * plane)])?;
    let (dy, dx, u, p) = (ops.memory.values(dy)?, ops.memory.values(dx)?, planes as u64, plane as u64);
    launch!(ops, k::GLOBAL_AVG_POOL_BACKWARD, "dp_global_avg_pool_backward", elementwise(planes * plane);
        &dy, &u, &p, &dx)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The structs passed by value have conv.cu's layout: their fields' count of `u64`s, no padding.
    #[test]
    fn geometries_are_packed_u64s() {
        assert_eq!(std::mem::size_of::<ConvGeometry>(), 10 * 8);
        assert_eq!(std::mem::size_of::<PoolGeometry>(), 8 * 8);
        assert_eq!(std::mem::align_of::<ConvGeometry>(), 8);
    }

    #[test]
    fn only_valid_geometries_reach_the_kernels() {
        let conv = Conv2dGeometry {
            in_c: 4,
            in_h: 9,
            in_w: 7,
            out_c: 6,
            kh: 3,
            kw: 2,
            stride: 2,
            padding: 1,
            dilation: 2,
            groups: 1,
        };
        let g = ConvGeometry::new(&conv).unwrap();
        assert_eq!((g.out_h, g.out_w), (conv.out_h() as u64, conv.out_w() as u64));
        // Grouped: the kernels unfold every channel; groups must divide both channel counts.
        assert!(ConvGeometry::new(&Conv2dGeometry { groups: 2, ..conv }).is_ok());
        assert!(matches!(
            ConvGeometry::new(&Conv2dGeometry { groups: 4, ..conv }),
            Err(DeviceError::Mismatch(_))
        ));
        assert!(matches!(
            ConvGeometry::new(&Conv2dGeometry { stride: 0, ..conv }),
            Err(DeviceError::Mismatch(_))
        ));
        let pool = Pool2dGeometry { channels: 3, in_h: 7, in_w: 7, kernel: 3, stride: 2, padding: 1 };
        let p = PoolGeometry::new(&pool).unwrap();
        assert_eq!((p.out_h, p.out_w), (4, 4));
        assert!(PoolGeometry::new(&Pool2dGeometry { padding: 2, ..pool }).is_err());
    }
}
