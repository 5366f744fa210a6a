//! The convolution and pooling kernels of device programs (`kernels/conv.cu`): im2col and col2im, im2col
//! with the batch folded into the columns and the examples of a matrix side by side,
//! a convolution's channel bias and activation, per-example bias gradients, the norms and weighted sum
//! of kept per-example gradients, and max, average and global average pooling with their backwards.

/// The CUDA C source.
pub const SOURCE: &str = include_str!("../kernels/conv.cu");

/// The threads of a `dp_kept_sq_norms` block, one block per example: the kernel's
/// `DP_KEPT_NORM_THREADS`, its launch bounds.
pub const KEPT_NORM_THREADS: u32 = 1024;

/// The kernels it defines, in the order [`crate::device::Gpu`] loads them.
pub const ENTRIES: &[&str] = &[
    "dp_im2col",
    "dp_col2im",
    "dp_channel_bias_activation",
    "dp_row_sums",
    "dp_kept_sq_norms",
    "dp_kept_weighted_sum",
    "dp_max_pool_forward",
    "dp_max_pool_backward",
    "dp_avg_pool_forward",
    "dp_avg_pool_backward",
    "dp_global_avg_pool_forward",
    "dp_global_avg_pool_backward",
    "dp_im2col_folded",
    "dp_fold_examples",
    "dp_gram_sq_norms",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kept_norms_launch_is_the_kernels_launch_bounds() {
        let bounded = ["dp_kept_sq_norms", "dp_gram_sq_norms"];
        crate::assert_launch_bounds(SOURCE, "DP_KEPT_NORM_THREADS", KEPT_NORM_THREADS, &bounded);
    }
}
