//! How a layer's per-example gradient norms are obtained.

/// The norm kernels of a layer applied at positions (linear, conv, LSTM weights): the two ways to get
/// `‖Δ_iᵀ A_i‖²` (see [`crate::cost`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Gram matrices of inputs and output gradients; no per-example gradient is formed.
    Ghost,
    /// Each example's gradient `Δ_iᵀ A_i` is formed in scratch and squared.
    Direct,
}

impl Strategy {
    /// `"ghost"` or `"direct"`, as plans print it.
    pub const fn name(self) -> &'static str {
        match self {
            Strategy::Ghost => "ghost",
            Strategy::Direct => "direct",
        }
    }
}

/// How the compiler obtains a layer's per-example gradient norms, as a compiled model reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NormStrategy {
    /// ‖Σ_t a_t δ_tᵀ‖² from inner products of activations and output gradients (no per-example gradient).
    Ghost,
    /// Per-example gradients are formed explicitly and their squared norms summed.
    Direct,
    /// Embedding rows: equal tokens of an example are grouped before squaring.
    TokenGrouped,
}

impl From<Strategy> for NormStrategy {
    fn from(strategy: Strategy) -> NormStrategy {
        match strategy {
            Strategy::Ghost => NormStrategy::Ghost,
            Strategy::Direct => NormStrategy::Direct,
        }
    }
}
