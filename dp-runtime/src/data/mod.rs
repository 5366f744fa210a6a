//! Datasets and the loaders of real data formats.

mod dataset;

pub use dataset::Dataset;
