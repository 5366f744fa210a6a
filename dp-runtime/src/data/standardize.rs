//! Input standardisation by fixed public constants: x ↦ (x − mean) / std with a mean and standard
//! deviation stated in advance, never estimated from the private data (that would be a statistic
//! of every row, released outside ε).

use std::any::Any;

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::InputElem;

/// A public (mean, std) pair and where it comes from.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Standardization {
    /// Subtracted from every input value.
    pub mean: f32,
    /// Every centred value is divided by it.
    pub std: f32,
    /// Where the constants come from.
    pub source: &'static str,
}

/// The MNIST convention for pixels in [0, 1]: mean 0.1307, std 0.3081.
pub const MNIST: Standardization = Standardization {
    mean: 0.1307,
    std: 0.3081,
    source: "the mean and standard deviation of the public MNIST training pixels in [0, 1], as published \
             in PyTorch's MNIST example (pytorch/examples, mnist/main.py); constants, not computed from the \
             data being trained on",
};

impl Standardization {
    /// Standardises every input value of `data` in place. Token inputs (`u32`) are refused, as are a
    /// non-finite mean or a standard deviation that is not positive and finite.
    pub fn apply<T: InputElem>(&self, data: &mut Dataset<T>) -> Result<()> {
        if !(self.mean.is_finite() && self.std > 0.0 && self.std.is_finite()) {
            return Err(Error::invalid(
                "input_standardization",
                format!("mean {} and std {}: the std must be positive and both finite", self.mean, self.std),
            ));
        }
        let Some(values) = (&mut data.inputs as &mut dyn Any).downcast_mut::<Vec<f32>>() else {
            return Err(Error::invalid(
                "input_standardization",
                format!("applies to real-valued inputs, not {}", std::any::type_name::<T>()),
            ));
        };
        let inverse = 1.0 / self.std;
        values.iter_mut().for_each(|x| *x = (*x - self.mean) * inverse);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standardises_each_value_by_the_constants_alone() {
        let mut data = Dataset::new(vec![0.0f32, 0.1307, 1.0, 0.4388], vec![0.0, 1.0], vec![2], 1).unwrap();
        MNIST.apply(&mut data).unwrap();
        let expected = [-0.1307 / 0.3081, 0.0, (1.0 - 0.1307) / 0.3081, 1.0];
        for (got, want) in data.inputs.iter().zip(expected) {
            assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        }
        assert_eq!(data.labels, vec![0.0, 1.0]);
    }

    #[test]
    fn tokens_and_bad_constants_are_refused() {
        let mut tokens = Dataset::new(vec![1u32, 2], vec![0.0], vec![2], 1).unwrap();
        assert!(MNIST.apply(&mut tokens).unwrap_err().to_string().contains("real-valued"));
        let mut data = Dataset::new(vec![0.5f32], vec![0.0], vec![1], 1).unwrap();
        let zero = Standardization { std: 0.0, ..MNIST };
        assert!(zero.apply(&mut data).unwrap_err().to_string().contains("input_standardization"));
        assert_eq!(data.inputs, vec![0.5]);
    }
}
