//! The attention kernels of device programs (`kernels/attention.cu`): the scaled, masked row softmax
//! of the core and its backward, a warp per row, and a fill; the products around them are
//! cuBLAS's.

/// The CUDA C source.
pub const SOURCE: &str = include_str!("../kernels/attention.cu");

/// The kernels it defines, in the order [`crate::device::Gpu`] loads them.
pub const ENTRIES: &[&str] = &["dp_attention_softmax", "dp_attention_softmax_backward", "dp_fill"];
