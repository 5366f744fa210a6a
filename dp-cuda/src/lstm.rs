//! The LSTM kernels of device programs (`kernels/lstm.cu`): one time step's gates forward and their
//! gradients backward, one thread per (example, unit); the products around them are cuBLAS's.

/// The CUDA C source.
pub const SOURCE: &str = include_str!("../kernels/lstm.cu");

/// The kernels it defines, in the order [`crate::device::Gpu`] loads them.
pub const ENTRIES: &[&str] = &["dp_lstm_forward_step", "dp_lstm_backward_step"];
