//! Merging LoRA adapters into their base weights: `W' = W + (alpha/r) · B A`, so that a model trained
//! with `lora(...)` layers can be saved as the plain model it computes (every LoRA layer a
//! `torch.nn.Linear` with the same output), without the adapter tensors.
//!
//! Merging is post-processing of the released parameters: it changes nothing in the guarantee.

use crate::error::{Error, Result};
use crate::model::DpModel;
use crate::pytorch::{self, Layout, StateTensor};
use std::collections::HashMap;
use std::path::Path;

/// The state dict of `params` (a buffer of `M`) with every LoRA layer merged: its weight is
/// `W + scale · B A` and its `lora_A`/`lora_B` tensors are left out.
pub fn merged_state_dict<M: DpModel>(params: &[f32]) -> Result<Vec<StateTensor>> {
    let mut tensors = Layout::of::<M>().export(params)?;
    let find = |tensors: &[StateTensor], name: &str| {
        tensors.iter().position(|t| t.name == name).ok_or_else(|| Error::Mismatch {
            model: M::NAME.to_string(),
            message: format!("LoRA tensor {name} is not in the state dict"),
        })
    };
    for spec in M::LORA {
        let (w, a, b) =
            (find(&tensors, spec.weight)?, find(&tensors, spec.lora_a)?, find(&tensors, spec.lora_b)?);
        let (rank, inputs, outputs) = (tensors[a].shape[0], tensors[a].shape[1], tensors[b].shape[0]);
        if tensors[w].shape != [outputs, inputs] || tensors[b].shape != [outputs, rank] {
            return Err(Error::Mismatch {
                model: M::NAME.to_string(),
                message: format!("LoRA tensors of {} have shapes that do not compose", spec.weight),
            });
        }
        // In f64, then rounded once: the merged weight is as close to W + sBA as f32 allows.
        let (a_values, b_values) = (tensors[a].values.clone(), tensors[b].values.clone());
        for (o, row) in tensors[w].values.chunks_exact_mut(inputs).enumerate() {
            for (j, value) in row.iter_mut().enumerate() {
                let ba: f64 = (0..rank)
                    .map(|k| f64::from(b_values[o * rank + k]) * f64::from(a_values[k * inputs + j]))
                    .sum();
                *value = (f64::from(*value) + f64::from(spec.scale) * ba) as f32;
            }
        }
    }
    let adapters: Vec<&str> = M::LORA.iter().flat_map(|s| [s.lora_a, s.lora_b]).collect();
    tensors.retain(|t| !adapters.contains(&t.name.as_str()));
    Ok(tensors)
}

/// Writes `model`'s merged state dict ([`merged_state_dict`]) to `path` as safetensors: a PyTorch
/// model with plain `Linear` layers in place of the LoRA ones loads it.
pub fn save_merged<M: DpModel>(path: &Path, model: &M) -> Result<()> {
    let tensors = merged_state_dict::<M>(model.params())?;
    if let Some(t) = tensors.iter().find(|t| t.values.iter().any(|v| !v.is_finite())) {
        return Err(Error::format(path, &t.name, "not finite"));
    }
    let metadata = HashMap::from([("merged_lora_from".to_string(), M::NAME.to_string())]);
    pytorch::write(path, &tensors, &metadata)
}
