//! Clip factors on the device (`kernels/clip.cu`, one thread per example): the values of
//! [`dp_runtime::clipping::clip_factors`], a non-finite or negative norm giving factor 0 and counted.

/// The CUDA C source.
pub const SOURCE: &str = include_str!("../kernels/clip.cu");
