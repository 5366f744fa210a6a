//! Planning: from a checked graph to the program the code generator emits.
//!
//! The driver walks the graph once; each op plans its own node ([`crate::ops::OpRules::plan`]) through
//! the [`Planner`]'s services (memory, gradient routing, fusion, scratch sharing, parameters, cost).
//! The result:
//!
//! - the steps, in forward order (the backward runs them in reverse);
//! - the static memory plan ([`memory`]): every buffer a per-example length at a per-example offset of
//!   one arena. Forward values and output gradients δ are all kept (book-keeping: the clipped sum
//!   reuses them without a second backward);
//! - the parameter table ([`params`]) and its groups (one per parameterised layer);
//! - one row per node for `describe()`: shapes, parameters, norm strategy, FLOPs and bytes.

#[cfg(test)]
mod fusion_tests;
#[cfg(test)]
mod kept_tests;
pub mod memory;
pub mod params;
pub mod planner;
#[cfg(test)]
mod routing_tests;
#[cfg(test)]
mod storage_tests;

use crate::check::Checked;
use crate::ir::Graph;
use crate::ops::Step;
use dp_spec::NormStrategy;
use memory::{Buf, Buffer, Scratch};
use params::ParamSlot;
use planner::Planner;

/// A row of the plan table (one per IR node).
#[derive(Debug, Clone)]
pub struct LayerPlan {
    pub field: String,
    pub op: String,
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
    pub params: usize,
    pub strategy: Option<NormStrategy>,
    /// Whether the layer keeps its per-example gradients for the clipped sum.
    pub kept_gradients: bool,
    pub flops_per_example: u64,
    pub bytes_per_example: u64,
}

/// How a step takes part in the passes after the forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepRole {
    /// A frozen layer: no norms, no clipped sum, no gradient sum.
    pub frozen: bool,
    /// Whether its backward runs: for a trained layer (its δ feeds its norms and sums) and for any
    /// step with something trained below it; not for a frozen layer or a parameterless op with
    /// nothing trained below (its gradients would reach no norm and no sum).
    pub backward: bool,
}

/// Everything code generation needs.
pub struct Plan {
    pub steps: Vec<Step>,
    /// The role of each step, indexed like `steps`.
    pub roles: Vec<StepRole>,
    pub buffers: Vec<Buffer>,
    /// Arena `f32`s per example (the sum of all buffer lengths).
    pub workspace_per_example: usize,
    pub params: Vec<ParamSlot>,
    /// The whole buffer: trained tensors first, then frozen ones.
    pub param_count: usize,
    /// The trained prefix of the buffer: the length of every gradient and of the noise.
    pub trained_param_count: usize,
    /// Group names (the trained parameterised fields), in buffer order.
    pub groups: Vec<String>,
    pub layers: Vec<LayerPlan>,
    /// The model's output and the buffer its loss gradient is written into.
    pub output: Buf,
    pub output_grad: usize,
    pub output_len: usize,
    pub input_len: usize,
    /// The clipping scratch: `max(in + out)` per example, shared by every linear layer.
    pub clip_scratch: usize,
    /// Scratch shared by the image layers and the direct norms.
    pub scratch: Scratch,
}

/// Lowers a checked graph into steps, parameters and the memory plan.
pub fn plan(graph: &Graph, checked: &Checked) -> Plan {
    // A value needs a gradient when it depends on a trained parameter (not on frozen ones only). A
    // parameterised layer keeps its output gradient buffer either way; a frozen one's is written only
    // when something below it is trained.
    let mut needs_grad = vec![false; graph.value_count];
    for node in &graph.nodes {
        needs_grad[node.output.0] =
            (node.op.is_parameterised() && !node.frozen) || node.inputs.iter().any(|v| needs_grad[v.0]);
    }
    let uses = graph.use_counts();
    let fusable = (0..graph.nodes.len()).map(|i| graph.fusion(i, &uses)).collect();
    let mut pl = Planner::new(&checked.shapes, uses, needs_grad, fusable);
    pl.storage[graph.input.0] = Some(Buf::Input);
    let (mut steps, mut roles) = (Vec::new(), Vec::new());
    for (i, node) in graph.nodes.iter().enumerate() {
        if pl.is_fused(i) {
            continue;
        }
        pl.frozen = node.frozen;
        let below_trained = node.inputs.iter().any(|v| pl.needs_grad[v.0]);
        if let Some(step) = node.op.plan(&mut pl, &graph.view(i)) {
            steps.push(step);
            let trained_layer = node.op.is_parameterised() && !node.frozen;
            roles.push(StepRole { frozen: node.frozen, backward: trained_layer || below_trained });
        }
    }
    pl.frozen = false;
    let param_count = pl.lay_out_params();
    let (clip_scratch, patches_per_task, [rows, norms]) = pl.allocate_shared();
    let layers = layer_table(graph, checked, &pl);
    let Planner { storage, grad, per_example, buffers, params, trained_len, groups, .. } = pl;
    Plan {
        output: storage[graph.output.0].expect("the output is planned"),
        output_grad: grad[graph.output.0]
            .expect("checking guarantees a trained layer upstream of the output"),
        output_len: checked.output_len,
        input_len: checked.shapes[graph.input.0].iter().product(),
        steps,
        roles,
        workspace_per_example: per_example,
        buffers,
        params,
        param_count,
        trained_param_count: trained_len,
        groups,
        layers,
        clip_scratch,
        scratch: Scratch { patches_per_task, rows, norms },
    }
}

/// One row per IR node: shapes, parameters, the norm strategy, FLOPs and bytes per example (each op
/// counts its own in its plan step; a fused activation is counted by the fusion).
fn layer_table(graph: &Graph, checked: &Checked, pl: &Planner<'_>) -> Vec<LayerPlan> {
    graph
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| LayerPlan {
            field: graph.fields[node.field].clone(),
            op: match node.frozen {
                true => format!("{} (frozen)", node.text),
                false => node.text.clone(),
            },
            input_shape: checked.shapes[node.inputs[0].0].clone(),
            output_shape: checked.shapes[node.output.0].clone(),
            params: checked.node_params[i],
            strategy: pl.layer_strategy[i].filter(|_| !node.frozen),
            kept_gradients: pl.layer_kept[i],
            flops_per_example: pl.layer_flops[i],
            bytes_per_example: pl.layer_bytes[i],
        })
        .collect()
}
