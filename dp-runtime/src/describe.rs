//! Renders a model's compiled plan as a table (`Model::describe()`, `dp describe`).

use crate::model::{LayerInfo, NormStrategy};
use std::fmt::Write;

fn shape(s: &[usize]) -> String {
    let dims: Vec<String> = s.iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join(", "))
}

/// The norm strategy; `direct, kept` for a layer whose clipped sum is the weighted sum of the
/// per-example gradients its direct norm formed and kept.
fn strategy(s: Option<NormStrategy>, kept: bool) -> &'static str {
    match (s, kept) {
        (None, _) => "-",
        (Some(NormStrategy::Ghost), _) => "ghost",
        (Some(NormStrategy::Direct), false) => "direct",
        (Some(NormStrategy::Direct), true) => "direct, kept",
        (Some(NormStrategy::TokenGrouped), _) => "token-grouped",
    }
}

/// `N parameters`, or `N parameters (T trained, F frozen)` when some are frozen.
pub fn parameter_summary(param_count: usize, trained: usize) -> String {
    match param_count.saturating_sub(trained) {
        0 => format!("{param_count} parameters"),
        frozen => format!("{param_count} parameters ({trained} trained, {frozen} frozen)"),
    }
}

/// One line per layer, then the totals. The header says how many parameters are trained when some
/// are frozen.
pub fn describe_plan(name: &str, param_count: usize, trained: usize, layers: &[LayerInfo]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{name}: {}", parameter_summary(param_count, trained));
    let _ = writeln!(
        out,
        "{:<12} {:<28} {:<16} {:<16} {:>10} {:<13} {:>14} {:>12}",
        "layer", "op", "input", "output", "params", "norms", "flops/example", "bytes/example"
    );
    let (mut flops, mut bytes) = (0u64, 0u64);
    for l in layers {
        flops += l.flops_per_example;
        bytes += l.bytes_per_example;
        let _ = writeln!(
            out,
            "{:<12} {:<28} {:<16} {:<16} {:>10} {:<13} {:>14} {:>12}",
            l.name,
            l.op,
            shape(l.input_shape),
            shape(l.output_shape),
            l.params,
            strategy(l.strategy, l.kept_gradients),
            l.flops_per_example,
            l.bytes_per_example
        );
    }
    let _ = writeln!(out, "total: {flops} flops and {bytes} workspace bytes per example");
    out
}
