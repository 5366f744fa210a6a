//! The seam between the planned program and the code that runs it.
//!
//! A backend turns each planned step into statements, pass by pass. The norms, the clipped sum and
//! the plain gradient sum of a parameterised layer have no default: a backend that forgets one for a
//! layer does not compile (every method matches [`Layer`] exhaustively), so a new layer can never
//! leave its column of `sq_norms` unwritten or its gradient out of the sum. The CPU backend
//! (`cpu::Cpu`) is the one implementation today; a device backend is a second one over the same plan.

use crate::ops::{Layer, Step};
use crate::parse::ast::LossKind;
use crate::plan::Plan;
use proc_macro2::TokenStream;

/// Emission of the passes of a planned model.
pub trait Backend {
    /// The loss of every example and its gradient, written into the output's gradient buffer.
    fn loss(&self, plan: &Plan, loss: LossKind) -> TokenStream;

    /// A step's forward.
    fn forward(&self, plan: &Plan, step: &Step) -> TokenStream;

    /// A step's backward (steps run in reverse): the gradient of its inputs from its output's, each
    /// layer's δ left in its buffer for the norms and the sums.
    fn backward(&self, plan: &Plan, step: &Step) -> TokenStream;

    /// Non-private training: ADDS Σ_i g_i of the layer's parameters into `grad`.
    fn gradient_sum(&self, plan: &Plan, layer: Layer<'_>) -> TokenStream;

    /// OVERWRITES the layer's column of `sq_norms` with every example's squared gradient norm (the
    /// column's previous values, garbage or NaN, must not matter).
    fn norms(&self, plan: &Plan, layer: Layer<'_>) -> TokenStream;

    /// ADDS Σ_i c_i g_i of the layer's parameters into `grad`, with the layer's column of `factors`;
    /// an example with factor 0 contributes exactly 0.
    fn clipped_sum(&self, plan: &Plan, layer: Layer<'_>) -> TokenStream;
}
