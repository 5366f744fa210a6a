//! The bodies of [`GpuOps`]' group norm primitives (`DeviceOps::group_norm_forward` and
//! `group_norm_backward`) through `kernels/norm.cu`: one block per (example, group), the blocks
//! striding over the rest. Each checks its shape and spans (and, through
//! [`RegionMemory::values`](super::RegionMemory::values) and
//! [`RegionMemory::ptr`](super::RegionMemory::ptr), their regions) before it queues anything. Every
//! span that may be in the arena (the values, statistics and affine gradients) goes to the kernels
//! tagged with its stored type (`dp_values`, f32 or bf16, docs/GPU.md "bf16 storage"); the affine
//! weight and bias are parameters, f32.

use cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use dp_runtime::device::{DeviceError, GroupNormDims, Span};

use super::{backend, k, GpuOps};

type Outcome = std::result::Result<(), DeviceError>;

/// `dp_group_norm_dims` of norm.cu, passed by value (three `u64`s, no padding).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct NormDims {
    channels: u64,
    plane: u64,
    groups: u64,
}

// SAFETY: a `#[repr(C)]` struct of `u64`s, laid out as norm.cu's `dp_group_norm_dims`.
unsafe impl DeviceRepr for NormDims {}

impl NormDims {
    /// Dimensions whose groups divide the channels (at least one group).
    fn new(what: &str, dims: &GroupNormDims) -> std::result::Result<Self, DeviceError> {
        if dims.groups == 0 || !dims.channels.is_multiple_of(dims.groups) {
            return Err(DeviceError::Mismatch(format!(
                "{what}: {} groups do not divide {} channels",
                dims.groups, dims.channels
            )));
        }
        let v = |x: usize| x as u64;
        Ok(NormDims { channels: v(dims.channels), plane: v(dims.plane), groups: v(dims.groups) })
    }
}

/// One block per unit (example, group) of `len` values: as many threads as the unit has values,
/// rounded up to whole warps, from 32 to 256; at most 65 535 blocks (the kernels stride over the rest).
fn per_unit(units: usize, len: usize) -> LaunchConfig {
    let threads = len.div_ceil(32).clamp(1, 8) as u32 * 32;
    LaunchConfig {
        grid_dim: (units.clamp(1, 65_535) as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

pub(super) fn group_norm_forward(
    ops: &GpuOps<'_>,
    (x, weight, bias): (Span, Span, Span),
    dims: &GroupNormDims,
    n: usize,
    (y, mean, rstd): (Span, Span, Span),
) -> Outcome {
    let d = NormDims::new("group_norm_forward", dims)?;
    let (len, stats) = (n * dims.input_len(), n * dims.groups);
    ops.check(
        "group_norm_forward",
        &[(x, len), (y, len), (weight, dims.channels), (bias, dims.channels), (mean, stats), (rstd, stats)],
    )?;
    let (x, w, b) = (ops.memory.values(x)?, ops.memory.ptr(weight)?, ops.memory.ptr(bias)?);
    let (y, m, r) = (ops.memory.values(y)?, ops.memory.values(mean)?, ops.memory.values(rstd)?);
    if len == 0 {
        return Ok(());
    }
    let config = per_unit(stats, dims.input_len() / dims.groups);
    let n = n as u64;
    launch!(ops, k::GROUP_NORM_FORWARD, "dp_group_norm_forward", config; &x, &d, &n, &w, &b, &y, &m, &r)
}

pub(super) fn group_norm_backward(
    ops: &GpuOps<'_>,
    (x, dy, weight): (Span, Span, Span),
    (mean, rstd): (Span, Span),
    dims: &GroupNormDims,
    n: usize,
    (dx, affine): (Span, Span),
) -> Outcome {
    let d = NormDims::new("group_norm_backward", dims)?;
    let (len, stats) = (n * dims.input_len(), n * dims.groups);
    ops.check(
        "group_norm_backward",
        &[
            (x, len),
            (dy, len),
            (dx, len),
            (weight, dims.channels),
            (mean, stats),
            (rstd, stats),
            (affine, n * 2 * dims.channels),
        ],
    )?;
    let (x, g, w) = (ops.memory.values(x)?, ops.memory.values(dy)?, ops.memory.ptr(weight)?);
    let (m, r) = (ops.memory.values(mean)?, ops.memory.values(rstd)?);
    let (dx, a) = (ops.memory.values(dx)?, ops.memory.values(affine)?);
    if len == 0 {
        return Ok(());
    }
    let config = per_unit(stats, dims.input_len() / dims.groups);
    let n = n as u64;
    launch!(ops, k::GROUP_NORM_BACKWARD, "dp_group_norm_backward", config;
        &x, &g, &w, &m, &r, &d, &n, &dx, &a)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The struct passed by value has norm.cu's layout: three `u64`s, no padding.
    #[test]
    fn dims_are_packed_u64s() {
        assert_eq!(std::mem::size_of::<NormDims>(), 3 * 8);
        assert_eq!(std::mem::align_of::<NormDims>(), 8);
    }

    #[test]
    fn only_groups_that_divide_the_channels_reach_the_kernels() {
        let dims = GroupNormDims { channels: 12, plane: 49, groups: 4 };
        let d = NormDims::new("t", &dims).unwrap();
        assert_eq!((d.channels, d.plane, d.groups), (12, 49, 4));
        for groups in [0, 5, 24] {
            let refused = NormDims::new("t", &GroupNormDims { groups, ..dims });
            assert!(matches!(refused, Err(DeviceError::Mismatch(_))), "{groups} groups");
        }
    }

    #[test]
    fn a_unit_gets_whole_warps_up_to_256_threads() {
        for (len, threads) in [(1, 32), (32, 32), (33, 64), (255, 256), (4096, 256)] {
            assert_eq!(per_unit(10, len).block_dim, (threads, 1, 1), "{len} values");
        }
        assert_eq!(per_unit(1 << 20, 8).grid_dim, (65_535, 1, 1));
    }
}
