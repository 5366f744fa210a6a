//! Logistic regression on Adult.

use crate::dp_model;

/// Logistic regression on the 104 one-hot Adult features: one logit, 105 parameters.
///
/// The founding paper (Subramani, Vadivelu, Kamath, "Enabling Fast Differentially Private SGD via
/// Just-in-Time Compilation and Vectorization", NeurIPS 2021) benchmarks it as logistic regression
/// on Adult (architecture table in its appendix B), with the binary cross-entropy of one logit.
#[dp_model(input = [104], loss = binary_cross_entropy)]
pub struct AdultLogReg {
    #[layer(linear(out = 1))]
    fc: Linear,
}
