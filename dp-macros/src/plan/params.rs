//! The parameter table: every tensor an offset in one flat buffer, in one parameter group.

/// One parameter tensor in the flat buffer.
#[derive(Debug, Clone)]
pub struct ParamSlot {
    /// `fc1.weight`, `fc1.bias`.
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: usize,
    pub len: usize,
    pub group: usize,
    /// How the tensor is initialised.
    pub init: Init,
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
