//! SSA values of the graph IR.

/// An SSA value: written by exactly one node (or the graph input), read by any number of nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ValueId(pub usize);
