//! An in-memory dataset: inputs and labels, example after example.

use crate::error::{Error, Result};
use crate::model::InputElem;

/// `len` examples of shape `example_shape`; labels are `label_len` `f32`s per example
/// (a class index, a 0/1 target, or regression targets).
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset<T> {
    /// Every example's input values, example after example (row-major within an example).
    pub inputs: Vec<T>,
    /// Every example's label values, `label_len` per example.
    pub labels: Vec<f32>,
    /// The shape of one example's input, e.g. `[1, 28, 28]`.
    pub example_shape: Vec<usize>,
    /// Label values per example.
    pub label_len: usize,
}

impl<T: InputElem> Dataset<T> {
    /// Checks that inputs and labels describe the same number of examples.
    pub fn new(
        inputs: Vec<T>,
        labels: Vec<f32>,
        example_shape: Vec<usize>,
        label_len: usize,
    ) -> Result<Self> {
        let example_len: usize = example_shape.iter().product();
        if example_len == 0 || label_len == 0 {
            return Err(Error::invalid("dataset", "examples and labels must not be empty"));
        }
        if !inputs.len().is_multiple_of(example_len) {
            return Err(Error::invalid(
                "dataset",
                format!("{} input values do not divide into examples of {example_len}", inputs.len()),
            ));
        }
        let n = inputs.len() / example_len;
        if labels.len() != n * label_len {
            return Err(Error::invalid(
                "dataset",
                format!("{n} examples but {} label values ({label_len} per example expected)", labels.len()),
            ));
        }
        Ok(Dataset { inputs, labels, example_shape, label_len })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len() / self.label_len
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values in one example's input.
    pub fn example_len(&self) -> usize {
        self.example_shape.iter().product()
    }

    /// One example's input.
    pub fn input(&self, i: usize) -> &[T] {
        let n = self.example_len();
        &self.inputs[i * n..(i + 1) * n]
    }

    /// One example's label values.
    pub fn label(&self, i: usize) -> &[f32] {
        &self.labels[i * self.label_len..(i + 1) * self.label_len]
    }

    /// Copies the examples at `indices` into `inputs` and `labels` (cleared first).
    pub fn gather(&self, indices: &[usize], inputs: &mut Vec<T>, labels: &mut Vec<f32>) {
        inputs.clear();
        labels.clear();
        for &i in indices {
            inputs.extend_from_slice(self.input(i));
            labels.extend_from_slice(self.label(i));
        }
    }
}
