//! A transformer's kernels around its products (`kernels/transformer.cu`): an activation's backward
//! from its input, a strided copy of rows (`first` and its backward), the patches permutation and a scaled add (a LoRA layer's sum).

/// The CUDA C source.
pub const SOURCE: &str = include_str!("../kernels/transformer.cu");

/// The kernels it defines, in the order [`crate::device::Gpu`] loads them.
pub const ENTRIES: &[&str] =
    &["dp_activation_backward_from_input", "dp_copy_strided", "dp_patches", "dp_add_scaled_into"];
