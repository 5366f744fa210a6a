//! Checkpoints: safetensors files with PyTorch's `state_dict` names and layouts, plus the optimizer
//! state, the step count and the accountant's ledger.
//!
//! Layout of a file:
//! - one F32 tensor per model parameter, named and shaped as in [`DpModel::PARAMS`] (`fc1.weight`
//!   `[out, in]`, ...), so a PyTorch `load_state_dict` (or safetensors' `load_file`) reads it; an LSTM's
//!   single bias is PyTorch's pair `bias_ih_l0` + `bias_hh_l0` (see [`crate::pytorch`]);
//! - one F32 tensor per optimizer buffer and parameter, named `optimizer.<buffer>.<parameter>`
//!   (e.g. `optimizer.exp_avg.fc1.weight`);
//! - metadata (strings): `format` = `dp-checkpoint/1`, `model`, `steps`, `optimizer` (JSON: kind and
//!   update count), `ledger` (JSON: the accountant's full history), `noise_multiplier`.
//!
//! Files are written atomically: a temporary file in the same directory, `fsync`, `rename` over the
//! target, then `fsync` of the directory, so a crash leaves either the old or the new checkpoint.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::accounting::Ledger;
use crate::error::{Error, Result};
use crate::model::DpModel;
use crate::optim::OptimizerState;
use crate::pytorch::{Layout, StateDict, StateTensor};

const FORMAT: &str = "dp-checkpoint/1";
const OPTIMIZER_PREFIX: &str = "optimizer.";

/// The training state stored in a checkpoint.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The flat parameter buffer (`DpModel::params` layout).
    pub params: Vec<f32>,
    /// Optimizer kind, update count and buffers (flat, like the parameters).
    pub optimizer: OptimizerState,
    /// Steps taken.
    pub steps: u64,
    /// Every accounted step.
    pub ledger: Ledger,
    /// The noise multiplier of the run that wrote it.
    pub noise_multiplier: f64,
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Writes `checkpoint` for model `M` to `path`, atomically.
pub fn save<M: DpModel>(path: &Path, checkpoint: &Checkpoint) -> Result<()> {
    check_len::<M>(path, "parameters", checkpoint.params.len())?;
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    // Parameters as PyTorch's state dict has them (an LSTM's one bias as `bias_ih_l0` + zero `bias_hh_l0`).
    for tensor in Layout::of::<M>().export(&checkpoint.params)? {
        tensors.push((tensor.name, tensor.shape, f32_bytes(&tensor.values)));
    }
    for (buffer, values) in &checkpoint.optimizer.buffers {
        check_len::<M>(path, &format!("optimizer buffer {buffer}"), values.len())?;
        for spec in M::PARAMS {
            let name = format!("{OPTIMIZER_PREFIX}{buffer}.{}", spec.name);
            tensors.push((
                name,
                spec.shape.to_vec(),
                f32_bytes(&values[spec.offset..spec.offset + spec.len]),
            ));
        }
    }
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::format(path, name, e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let json = |value: &dyn erased::Json| value.to_json().map_err(|e| Error::format(path, "metadata", e));
    let metadata = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("model".to_string(), M::NAME.to_string()),
        ("steps".to_string(), checkpoint.steps.to_string()),
        ("noise_multiplier".to_string(), checkpoint.noise_multiplier.to_string()),
        ("optimizer".to_string(), json(&checkpoint.optimizer)?),
        ("ledger".to_string(), json(&checkpoint.ledger)?),
    ]);
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::format(path, "serialize", e.to_string()))?;
    write_atomically(path, &bytes)
}

/// Writes only the parameters of `model` (no metadata needed to read it back with [`load_params`]).
pub fn save_params<M: DpModel>(path: &Path, model: &M) -> Result<()> {
    let checkpoint = Checkpoint {
        params: model.params().to_vec(),
        optimizer: OptimizerState::default(),
        steps: 0,
        ledger: Ledger::new(),
        noise_multiplier: 0.0,
    };
    save::<M>(path, &checkpoint)
}

/// Reads a checkpoint written by [`save`] for model `M`. A file of another model (a missing tensor,
/// another shape, another dtype, or an unknown tensor) is an error naming the tensor.
pub fn load<M: DpModel>(path: &Path) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let tensors =
        SafeTensors::deserialize(&bytes).map_err(|e| Error::format(path, "header", e.to_string()))?;
    let (_, header) =
        SafeTensors::read_metadata(&bytes).map_err(|e| Error::format(path, "header", e.to_string()))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let field = |key: &str| {
        meta.get(key)
            .ok_or_else(|| Error::format(path, "metadata", format!("no `{key}`: not a dp checkpoint")))
    };
    if field("format")? != FORMAT {
        return Err(Error::format(path, "metadata", format!("format {} is not {FORMAT}", field("format")?)));
    }
    let params = read_params::<M>(path, &tensors)?;
    let parse = |key: &str| -> Result<u64> {
        field(key)?.parse().map_err(|e| Error::format(path, key, format!("not a count: {e}")))
    };
    let steps = parse("steps")?;
    let noise_multiplier = field("noise_multiplier")?
        .parse()
        .map_err(|e| Error::format(path, "noise_multiplier", format!("not a number: {e}")))?;
    let mut optimizer: OptimizerState = serde_json::from_str(field("optimizer")?)
        .map_err(|e| Error::format(path, "optimizer", e.to_string()))?;
    let ledger: Ledger =
        serde_json::from_str(field("ledger")?).map_err(|e| Error::format(path, "ledger", e.to_string()))?;
    if ledger.steps() != steps {
        return Err(Error::format(
            path,
            "ledger",
            format!("records {} steps, the checkpoint {steps}", ledger.steps()),
        ));
    }
    // Optimizer buffers: every `optimizer.<buffer>.<param>` of every parameter.
    let mut buffers: Vec<String> = Vec::new();
    let mut names = tensors.names();
    names.sort_unstable();
    for name in names {
        if let Some(rest) = name.strip_prefix(OPTIMIZER_PREFIX) {
            let buffer = M::PARAMS
                .iter()
                .find_map(|s| rest.strip_suffix(s.name).and_then(|b| b.strip_suffix('.')))
                .ok_or_else(|| {
                    Error::format(path, name, format!("not a buffer of a parameter of {}", M::NAME))
                })?;
            if !buffers.iter().any(|b| b == buffer) {
                buffers.push(buffer.to_string());
            }
        }
    }
    buffers.sort();
    for buffer in buffers {
        let mut values = vec![0.0; M::PARAM_COUNT];
        for spec in M::PARAMS {
            let name = format!("{OPTIMIZER_PREFIX}{buffer}.{}", spec.name);
            let view = tensors.tensor(&name).map_err(|_| Error::format(path, &name, "missing"))?;
            copy_tensor(path, &name, spec.shape, &view, &mut values[spec.offset..spec.offset + spec.len])?;
        }
        optimizer.buffers.push((buffer, values));
    }
    Ok(Checkpoint { params, optimizer, steps, ledger, noise_multiplier })
}

/// Reads the parameters of `M` from any safetensors file with PyTorch names (e.g. exported pretrained
/// weights, or a checkpoint); metadata and `optimizer.*` tensors are ignored, other extra tensors are
/// an error naming them.
pub fn load_params<M: DpModel>(path: &Path) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let tensors =
        SafeTensors::deserialize(&bytes).map_err(|e| Error::format(path, "header", e.to_string()))?;
    read_params::<M>(path, &tensors)
}

fn read_params<M: DpModel>(path: &Path, tensors: &SafeTensors<'_>) -> Result<Vec<f32>> {
    // Sorted, so that the tensor an error names does not depend on hash order.
    let mut names = tensors.names();
    names.sort_unstable();
    let mut dict = StateDict::default();
    for name in names.into_iter().filter(|n| !n.starts_with(OPTIMIZER_PREFIX)) {
        let view = tensors.tensor(name).map_err(|e| Error::format(path, name, e.to_string()))?;
        let mut values = vec![0.0; view.shape().iter().product()];
        copy_tensor(path, name, view.shape(), &view, &mut values)?;
        dict.tensors.push(StateTensor { name: name.to_string(), shape: view.shape().to_vec(), values });
    }
    Layout::of::<M>().import(path, &dict)
}

fn copy_tensor(
    path: &Path,
    name: &str,
    shape: &[usize],
    view: &TensorView<'_>,
    out: &mut [f32],
) -> Result<()> {
    if view.dtype() != Dtype::F32 {
        return Err(Error::format(path, name, format!("dtype {:?}, F32 expected", view.dtype())));
    }
    if view.shape() != shape {
        return Err(Error::format(path, name, format!("shape {:?}, the model has {shape:?}", view.shape())));
    }
    for (o, chunk) in out.iter_mut().zip(view.data().chunks_exact(4)) {
        *o = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    Ok(())
}

fn check_len<M: DpModel>(path: &Path, what: &str, len: usize) -> Result<()> {
    if len != M::PARAM_COUNT {
        return Err(Error::format(
            path,
            what,
            format!("{len} values, model {} has {}", M::NAME, M::PARAM_COUNT),
        ));
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file in the same directory, fsync and rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name =
        path.file_name().ok_or_else(|| Error::invalid("checkpoint", "the path has no file name"))?;
    let temp = dir.join(format!(".{}.tmp-{}", file_name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temp).map_err(|e| Error::io(&temp, e))?;
        file.write_all(bytes).map_err(|e| Error::io(&temp, e))?;
        file.sync_all().map_err(|e| Error::io(&temp, e))?;
        std::fs::rename(&temp, path).map_err(|e| Error::io(path, e))?;
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// Serialising metadata values to JSON strings without naming each type twice.
mod erased {
    pub trait Json {
        fn to_json(&self) -> Result<String, String>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> Result<String, String> {
            serde_json::to_string(self).map_err(|e| e.to_string())
        }
    }
}
