//! The element-wise activation functions, one row each: the name a model writes (also its `forward`
//! method, `.relu()`), the variant of `dp_kernels::Activation` that computes it, and what its
//! derivative is taken from. Adding an activation is one row here plus its kernel.

/// What an activation's derivative is computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Derivative {
    /// The output y (relu: y > 0, tanh: 1 − y²): the input need not be kept, so the activation can run
    /// in the output pass of the layer before it.
    FromOutput,
    /// The input x (GELU, SiLU): the input is kept, so the activation runs as a step of its own.
    FromInput,
}

macro_rules! activations {
    ($($variant:ident = $name:literal, $derivative:ident;)*) => {
        /// The function an element-wise step applies (`Identity` in a layer with none fused).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Act {
            Identity,
            $($variant,)*
        }

        impl Act {
            /// Every activation name `#[layer(...)]` and `forward` accept.
            pub const NAMES: &'static [&'static str] = &[$($name),*];

            /// The activation written `name`.
            pub fn from_name(name: &str) -> Option<Act> {
                match name {
                    $($name => Some(Act::$variant),)*
                    _ => None,
                }
            }

            /// The name of the variant of `dp_kernels::Activation` (and of the field type of a field
            /// that starts with this activation).
            pub fn variant(self) -> &'static str {
                match self {
                    Act::Identity => "Identity",
                    $(Act::$variant => stringify!($variant),)*
                }
            }

            /// What the derivative is computed from.
            pub fn derivative(self) -> Derivative {
                match self {
                    Act::Identity => Derivative::FromOutput,
                    $(Act::$variant => Derivative::$derivative,)*
                }
            }
        }
    };
}

activations! {
    Relu = "relu", FromOutput;
    Tanh = "tanh", FromOutput;
    Sigmoid = "sigmoid", FromOutput;
    Gelu = "gelu", FromInput;
    Silu = "silu", FromInput;
    GeluExact = "gelu_exact", FromInput;
}
