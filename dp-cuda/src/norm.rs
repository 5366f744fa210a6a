//! The group norm kernels of device programs (`kernels/norm.cu`): the forward (statistics, normalised
//! and affine output) and the backward (input gradient and per-example affine gradients), one block
//! per (example, group).

/// The CUDA C source.
pub const SOURCE: &str = include_str!("../kernels/norm.cu");

/// The kernels it defines, in the order [`crate::device::Gpu`] loads them.
pub const ENTRIES: &[&str] = &["dp_group_norm_forward", "dp_group_norm_backward"];
