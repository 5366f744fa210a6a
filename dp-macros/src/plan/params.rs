//! The parameter table: every tensor an offset in one flat buffer, in one parameter group.
//!
//! The buffer is laid out trained-first: every trained tensor lies in `0..trained_count`, every frozen
//! one after it, so the gradient, the noise and the optimizer's state are the trained prefix.

/// The group of a frozen tensor: it has no column of `sq_norms`, and no pass that reads a group
/// (norms, clipped sum, gradient sum) runs for its layer.
pub const NO_GROUP: usize = usize::MAX;

/// One parameter tensor in the flat buffer.
#[derive(Debug, Clone)]
pub struct ParamSlot {
    /// `fc1.weight`, `fc1.bias`.
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: usize,
    pub len: usize,
    /// [`NO_GROUP`] for a frozen tensor.
    pub group: usize,
    /// How the tensor is initialised.
    pub init: Init,
    /// Whether the tensor is trained (in the buffer's trained prefix).
    pub trained: bool,
}

/// A tensor's initial values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// PyTorch's default for weights and biases: U(−bound, bound), bound = 1/√fan_in.
    Uniform { bound: f32 },
    /// A constant (norm layers: weight 1, bias 0).
    Constant(f32),
    /// N(0, std²) (embedding tables).
    Normal { std: f32 },
}
