//! The sequence kernels of device programs (`kernels/sequence.cu`): an embedding over a sequence
//! (gather, token-grouped norms, scatter-add) and sums and broadcasts over the time axis.

/// The CUDA C source.
pub const SOURCE: &str = include_str!("../kernels/sequence.cu");

/// The kernels it defines, in the order [`crate::device::Gpu`] loads them.
pub const ENTRIES: &[&str] = &[
    "dp_embedding_forward",
    "dp_embedding_norms",
    "dp_embedding_scatter",
    "dp_sequence_sums",
    "dp_sequence_broadcast",
];
