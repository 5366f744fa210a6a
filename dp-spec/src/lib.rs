//! The facts about a layer that the compiler (`dp-macros`), the kernels (`dp-kernels`) and the runtime
//! (`dp-runtime`) must agree on, written once: how a layer's per-example gradient norms are obtained
//! ([`NormStrategy`], [`Strategy`]), the static shape of a layer applied at T positions
//! ([`PositionalLayer`]) and of the layers with geometry values ([`Conv2dGeometry`],
//! [`Pool2dGeometry`], [`LstmDims`]), and the cost formulas from which the compiler picks a strategy ([`cost`]).
//!
//! No dependencies: the proc-macro crate links it at compile time, the kernels and the runtime at run
//! time, so a formula the planner uses is the formula the kernel runs.

pub mod cost;
mod geometry;
mod positional;
mod strategy;

pub use geometry::{
    Conv2dGeometry, LstmDims, Pool2dGeometry, FOLD_BELOW_POSITIONS, FOLD_CHANNELS_PER_POSITION,
};
pub use positional::{PositionalLayer, RowLayout};
pub use strategy::{NormStrategy, Strategy};
