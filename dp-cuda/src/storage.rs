//! Conversions between a span's f32 and bf16 slots (`kernels/storage.cu`), for the products of a
//! device program storing in bf16 (`program/products.rs`, docs/GPU.md "bf16 storage").

/// The CUDA C source.
pub const SOURCE: &str = include_str!("../kernels/storage.cu");

/// The kernels it defines, in the order [`crate::device::Gpu`] loads them.
pub const ENTRIES: &[&str] = &["dp_convert"];
