//! The element-wise and reduction kernels of device programs (`kernels/dense.cu`): everything of a
//! [`dp_runtime::device::DeviceOps`] program that is not a matrix product.

use dp_kernels::activation::Activation;

/// The CUDA C source.
pub const SOURCE: &str = include_str!("../kernels/dense.cu");

/// The kernels it defines, in the order [`crate::device::Gpu`] loads them.
pub const ENTRIES: &[&str] = &[
    "dp_bias_activation",
    "dp_activation",
    "dp_activation_backward",
    "dp_softmax_cross_entropy",
    "dp_binary_cross_entropy",
    "dp_mean_squared_error",
    "dp_linear_ghost_norms",
    "dp_scale_rows",
    "dp_column_sums_add",
    "dp_add_into",
    "dp_count_non_finite",
    "dp_embedding_mean_forward",
    "dp_embedding_mean_norms",
    "dp_embedding_mean_scatter",
];

/// The kernels' code of an activation (`dp_activate` in `kernels/activation.cuh`).
pub fn activation_code(act: Activation) -> i32 {
    match act {
        Activation::Identity => 0,
        Activation::Relu => 1,
        Activation::Tanh => 2,
        Activation::Sigmoid => 3,
        Activation::Gelu => 4,
        Activation::Silu => 5,
        Activation::GeluExact => 6,
    }
}
