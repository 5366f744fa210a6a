//! Datasets and the loaders of real data formats.
//!
//! Every loader returns [`crate::Result`]: a malformed file gives an [`crate::Error::Format`] naming
//! the file and the byte offset, line or field, never a panic and never a NaN passed on. Files may
//! be gzip-compressed wherever a raw file is accepted (see [`source`]).
//!
//! Preprocessing that reads the private rows (a fitted category list or vocabulary, statistics, a
//! split that depends on the row count) is released outside the privacy guarantee. The built-in
//! loaders use public knowledge only; what is data-dependent says so in its name
//! (`…_unaccounted`) and in its [`Provenance`].

pub mod adult;
pub mod augment;
pub mod cifar10;
mod dataset;
pub mod idx;
pub mod mnist;
pub mod npy;
pub mod provenance;
pub mod scattering;
pub mod source;
pub mod standardize;
pub mod tabular;
pub mod text;

pub use dataset::Dataset;
pub use provenance::Provenance;
