//! CPU kernels for dp.
