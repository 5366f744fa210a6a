//! The LSTM kernels of device programs (`kernels/lstm.cu`): one time step's gates forward and their
//! gradients backward, one thread per (example, unit), the products around them cuBLAS's; and the whole
//! recurrence each way as one kernel, one block per example, its products formed in the block.

/// The CUDA C source.
pub const SOURCE: &str = include_str!("../kernels/lstm.cu");

/// The kernels it defines, in the order [`crate::device::Gpu`] loads them.
pub const ENTRIES: &[&str] =
    &["dp_lstm_forward_step", "dp_lstm_backward_step", "dp_lstm_forward_fused", "dp_lstm_backward_fused"];

/// The threads of a block of the fused recurrences: the kernels' `DP_LSTM_BLOCK_THREADS`, their
/// launch bounds.
pub const LSTM_BLOCK_THREADS: u32 = 512;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fused_launch_is_the_kernels_launch_bounds() {
        let kernels = ["dp_lstm_forward_fused", "dp_lstm_backward_fused"];
        crate::assert_launch_bounds(SOURCE, "DP_LSTM_BLOCK_THREADS", LSTM_BLOCK_THREADS, &kernels);
    }
}
