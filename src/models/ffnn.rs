//! The fully connected network on Adult.

use crate::dp_model;

/// The founding paper's FCNN on Adult: 104 → 50 → relu → 2, 5,352 parameters.
///
/// Subramani, Vadivelu, Kamath, "Enabling Fast Differentially Private SGD via Just-in-Time Compilation
/// and Vectorization" (NeurIPS 2021), appendix B (the FCNN on Adult). The paper's text gives
/// 5,532 parameters; its code builds 104·50 + 50 + 50·2 + 2 = 5,352, which is what this model has.
#[dp_model(input = [104], loss = cross_entropy(classes = 2))]
pub struct AdultFfnn {
    #[layer(linear(out = 50), relu)]
    fc1: Linear,
    #[layer(linear(out = 2))]
    fc2: Linear,
}
