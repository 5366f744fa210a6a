//! The noisy SGD update on the device (`kernels/update.cu`, one thread per coordinate): the values of
//! `NoisyGradient::with_drawn_noise` followed by [`dp_runtime::optim::Sgd`]'s step (momentum, Nesterov,
//! weight decay), with the normals of [`crate::noise`].

/// The CUDA C source.
pub const SOURCE: &str = include_str!("../kernels/update.cu");
