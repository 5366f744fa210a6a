//! Checkpoints: safetensors files with PyTorch's `state_dict` names and layouts, plus the optimizer
//! state, the step count, the accountant's ledger and the identity of the run that wrote them.
//!
//! Layout of a file:
//! - one F32 tensor per model parameter, named and shaped as in [`DpModel::PARAMS`] (`fc1.weight`
//!   `[out, in]`, ...), so a PyTorch `load_state_dict` (or safetensors' `load_file`) reads it; an LSTM's
//!   single bias is PyTorch's pair `bias_ih_l0` + `bias_hh_l0` (see [`crate::pytorch`]);
//! - one F32 tensor per optimizer buffer and parameter, named `optimizer.<buffer>.<parameter>`
//!   (e.g. `optimizer.exp_avg.fc1.weight`);
//! - metadata (strings): `format` = `dp-checkpoint/2`, `steps`, `optimizer` (JSON: kind and update
//!   count), `ledger` (JSON: the accountant's full history) and the [`RunIdentity`]: `model`,
//!   `param_count`, `noise_multiplier`, `sampling_rate`, `delta`, `examples`, `expected_batch_size`,
//!   `planned_steps`, `ranks` (K of a distributed run; absent, read as 1, in files written before
//!   distributed runs) (numbers written with Rust's shortest round-trip formatting, so they read back
//!   bit for bit).
//!
//! [`save_params`] writes the parameters only, with `format` = `dp-params/1`: [`load_params`] reads
//! such a file, [`load`] refuses it (there is nothing to resume).
//!
//! [`load`] checks, and refuses naming the field: the model name and parameter count against `M`;
//! every parameter and optimizer value finite; the identity's values in range and consistent
//! (q = B / N); the ledger valid, its step count equal to `steps` and every phase at the identity's
//! q and σ; `steps` ≤ `planned_steps`. [`save`] makes the same checks before writing.
//!
//! Files are written atomically: a temporary file in the same directory, `fsync`, `rename` over the
//! target, then `fsync` of the directory, so a crash leaves either the old or the new checkpoint. Any
//! of these failing, the directory's `fsync` included, is an error.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::accounting::Ledger;
use crate::error::{Error, Result};
use crate::model::DpModel;
use crate::optim::OptimizerState;
use crate::plan::PrivacyPlan;
use crate::pytorch::{Layout, StateDict, StateTensor};

const FORMAT: &str = "dp-checkpoint/2";
/// The format before the run identity was stored: it cannot be resumed safely.
const FORMAT_WITHOUT_IDENTITY: &str = "dp-checkpoint/1";
/// Parameters only ([`save_params`]).
const PARAMS_FORMAT: &str = "dp-params/1";
const OPTIMIZER_PREFIX: &str = "optimizer.";

/// What identifies the run a checkpoint belongs to: the model and every setting of the privacy plan
/// that the accounting depends on. A run may resume a checkpoint only with an equal identity (see
/// [`RunIdentity::differences`]), so that the ledger continues with the same q, σ and δ and the run
/// ends where the interrupted one would have.
#[derive(Debug, Clone, PartialEq)]
pub struct RunIdentity {
    /// The model's name, [`DpModel::NAME`].
    pub model: String,
    /// The model's number of parameters, [`DpModel::PARAM_COUNT`].
    pub param_count: usize,
    /// σ, the noise multiplier.
    pub noise_multiplier: f64,
    /// q = B / N.
    pub sampling_rate: f64,
    /// δ of the reported ε.
    pub delta: f64,
    /// N, the number of training examples.
    pub examples: usize,
    /// B, the expected batch size.
    pub expected_batch_size: usize,
    /// T, the steps of the whole plan.
    pub planned_steps: u64,
    /// K, the ranks of a distributed run (1 for one process): a run resumes only with the K that
    /// wrote its checkpoint (`docs/DISTRIBUTED.md`).
    pub ranks: usize,
}

impl RunIdentity {
    /// The identity of a run of model `M` under `plan`.
    pub fn of_plan<M: DpModel>(plan: &PrivacyPlan) -> Self {
        RunIdentity {
            model: M::NAME.to_string(),
            param_count: M::PARAM_COUNT,
            noise_multiplier: plan.noise_multiplier(),
            sampling_rate: plan.sampling_rate(),
            delta: plan.delta(),
            examples: plan.examples(),
            expected_batch_size: plan.expected_batch_size(),
            planned_steps: plan.total_steps(),
            ranks: 1,
        }
    }

    /// The same identity for a run of `ranks` processes.
    pub fn with_ranks(self, ranks: usize) -> Self {
        RunIdentity { ranks, ..self }
    }

    /// Every field in which `self` (a checkpoint's) differs from `run` (this run's), as
    /// `field: checkpoint X, this run Y`; empty when they are equal. Floating-point values are compared
    /// exactly: a checkpoint stores them bit for bit, and the same settings give the same values.
    pub fn differences(&self, run: &RunIdentity) -> Vec<String> {
        // Destructured without `..`: a new field must be compared here, or this does not compile.
        let RunIdentity {
            model,
            param_count,
            noise_multiplier,
            sampling_rate,
            delta,
            examples,
            expected_batch_size,
            planned_steps,
            ranks,
        } = self;
        let mut differences = Vec::new();
        let mut compare = |field: &str, ours: String, theirs: String| {
            if ours != theirs {
                differences.push(format!("{field}: checkpoint {ours}, this run {theirs}"));
            }
        };
        compare("model", model.clone(), run.model.clone());
        compare("param_count", param_count.to_string(), run.param_count.to_string());
        compare("examples (N)", examples.to_string(), run.examples.to_string());
        compare("sampling_rate (q)", sampling_rate.to_string(), run.sampling_rate.to_string());
        compare("noise_multiplier (sigma)", noise_multiplier.to_string(), run.noise_multiplier.to_string());
        compare("delta", delta.to_string(), run.delta.to_string());
        compare(
            "expected_batch_size (B)",
            expected_batch_size.to_string(),
            run.expected_batch_size.to_string(),
        );
        compare("planned_steps", planned_steps.to_string(), run.planned_steps.to_string());
        compare("ranks (K, mpirun -n)", ranks.to_string(), run.ranks.to_string());
        differences
    }
}

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
    /// The run that wrote it: model and privacy plan.
    pub identity: RunIdentity,
}

/// A tensor to write: name, shape, little-endian F32 bytes.
type NamedTensor = (String, Vec<usize>, Vec<u8>);

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Writes `checkpoint` for model `M` to `path`, atomically, after the checks [`load`] makes (a
/// checkpoint that could not be loaded back is never written).
pub fn save<M: DpModel>(path: &Path, checkpoint: &Checkpoint) -> Result<()> {
    check_identity_is_of::<M>(path, &checkpoint.identity)?;
    check_state::<M>(path, checkpoint)?;
    let mut tensors = parameter_tensors::<M>(&checkpoint.params)?;
    // An optimizer buffer covers the trained parameters only (frozen ones have no state).
    for (buffer, values) in &checkpoint.optimizer.buffers {
        for spec in M::PARAMS.iter().filter(|s| s.is_trained()) {
            let name = format!("{OPTIMIZER_PREFIX}{buffer}.{}", spec.name);
            tensors.push((
                name,
                spec.shape.to_vec(),
                f32_bytes(&values[spec.offset..spec.offset + spec.len]),
            ));
        }
    }
    let json = |value: &dyn erased::Json| value.to_json().map_err(|e| Error::format(path, "metadata", e));
    let RunIdentity {
        model,
        param_count,
        noise_multiplier,
        sampling_rate,
        delta,
        examples,
        expected_batch_size,
        planned_steps,
        ranks,
    } = &checkpoint.identity;
    let metadata = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("model".to_string(), model.clone()),
        ("param_count".to_string(), param_count.to_string()),
        ("noise_multiplier".to_string(), noise_multiplier.to_string()),
        ("sampling_rate".to_string(), sampling_rate.to_string()),
        ("delta".to_string(), delta.to_string()),
        ("examples".to_string(), examples.to_string()),
        ("expected_batch_size".to_string(), expected_batch_size.to_string()),
        ("planned_steps".to_string(), planned_steps.to_string()),
        ("ranks".to_string(), ranks.to_string()),
        ("steps".to_string(), checkpoint.steps.to_string()),
        ("optimizer".to_string(), json(&checkpoint.optimizer)?),
        ("ledger".to_string(), json(&checkpoint.ledger)?),
    ]);
    write_tensors(path, &tensors, metadata)
}

/// Writes only the parameters of `model` (format `dp-params/1`): readable with [`load_params`] (and
/// by PyTorch), not resumable.
pub fn save_params<M: DpModel>(path: &Path, model: &M) -> Result<()> {
    let tensors = parameter_tensors::<M>(model.params())?;
    if let Some(i) = model.params().iter().position(|v| !v.is_finite()) {
        return Err(Error::format(path, "parameters", format!("value {i} is not finite")));
    }
    let metadata = HashMap::from([
        ("format".to_string(), PARAMS_FORMAT.to_string()),
        ("model".to_string(), M::NAME.to_string()),
        ("param_count".to_string(), M::PARAM_COUNT.to_string()),
    ]);
    write_tensors(path, &tensors, metadata)
}

/// The parameters as PyTorch's state dict has them (an LSTM's one bias as `bias_ih_l0` + zero
/// `bias_hh_l0`): name, shape, little-endian bytes.
fn parameter_tensors<M: DpModel>(params: &[f32]) -> Result<Vec<NamedTensor>> {
    Ok(Layout::of::<M>()
        .export(params)?
        .into_iter()
        .map(|tensor| (tensor.name, tensor.shape, f32_bytes(&tensor.values)))
        .collect())
}

fn write_tensors(path: &Path, tensors: &[NamedTensor], metadata: HashMap<String, String>) -> Result<()> {
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::format(path, name, e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::format(path, "serialize", e.to_string()))?;
    write_atomically(path, &bytes)
}

/// Reads a checkpoint written by [`save`] for model `M`, with every check listed in the module docs.
/// Another model's checkpoint is an [`Error::Mismatch`] naming both models (and both parameter
/// counts); a malformed, non-finite or inconsistent value is an [`Error::Format`] naming the field or
/// tensor.
pub fn load<M: DpModel>(path: &Path) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let tensors =
        SafeTensors::deserialize(&bytes).map_err(|e| Error::format(path, "header", e.to_string()))?;
    let (_, header) =
        SafeTensors::read_metadata(&bytes).map_err(|e| Error::format(path, "header", e.to_string()))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let field = |key: &str| {
        meta.get(key)
            .map(String::as_str)
            .ok_or_else(|| Error::format(path, "metadata", format!("no `{key}`: not a dp checkpoint")))
    };
    match field("format")? {
        FORMAT => {}
        PARAMS_FORMAT => {
            return Err(Error::format(
                path,
                "metadata",
                "this file holds parameters only (no optimizer state, ledger or plan): it cannot resume a \
                 run; read it with load_params",
            ))
        }
        FORMAT_WITHOUT_IDENTITY => {
            return Err(Error::format(
                path,
                "metadata",
                format!(
                    "format {FORMAT_WITHOUT_IDENTITY} does not record the run's plan (q, sigma, delta, N, B, \
                     planned steps), so resuming it cannot be checked; its parameters can still be read \
                     with load_params"
                ),
            ))
        }
        other => return Err(Error::format(path, "metadata", format!("format {other} is not {FORMAT}"))),
    }
    fn number<T: std::str::FromStr>(path: &Path, key: &str, text: &str) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        text.parse().map_err(|e| Error::format(path, key, format!("'{text}' is not a number: {e}")))
    }
    let identity = RunIdentity {
        model: field("model")?.to_string(),
        param_count: number(path, "param_count", field("param_count")?)?,
        noise_multiplier: number(path, "noise_multiplier", field("noise_multiplier")?)?,
        sampling_rate: number(path, "sampling_rate", field("sampling_rate")?)?,
        delta: number(path, "delta", field("delta")?)?,
        examples: number(path, "examples", field("examples")?)?,
        expected_batch_size: number(path, "expected_batch_size", field("expected_batch_size")?)?,
        planned_steps: number(path, "planned_steps", field("planned_steps")?)?,
        // Written since distributed runs exist; every earlier checkpoint is of one process.
        ranks: match meta.get("ranks") {
            Some(text) => number(path, "ranks", text)?,
            None => 1,
        },
    };
    // The model first: another model's file should say so, not name a tensor.
    check_identity_is_of::<M>(path, &identity)?;
    let params = read_params::<M>(path, &tensors)?;
    let steps = number(path, "steps", field("steps")?)?;
    let mut optimizer: OptimizerState = serde_json::from_str(field("optimizer")?)
        .map_err(|e| Error::format(path, "optimizer", e.to_string()))?;
    let ledger: Ledger =
        serde_json::from_str(field("ledger")?).map_err(|e| Error::format(path, "ledger", e.to_string()))?;
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
        let mut values = vec![0.0; M::TRAINED_PARAM_COUNT];
        for spec in M::PARAMS.iter().filter(|s| s.is_trained()) {
            let name = format!("{OPTIMIZER_PREFIX}{buffer}.{}", spec.name);
            let view = tensors.tensor(&name).map_err(|_| Error::format(path, &name, "missing"))?;
            copy_tensor(path, &name, spec.shape, &view, &mut values[spec.offset..spec.offset + spec.len])?;
        }
        optimizer.buffers.push((buffer, values));
    }
    let checkpoint = Checkpoint { params, optimizer, steps, ledger, identity };
    check_state::<M>(path, &checkpoint)?;
    Ok(checkpoint)
}

/// The identity names model `M`: an [`Error::Mismatch`] naming both models otherwise.
fn check_identity_is_of<M: DpModel>(path: &Path, identity: &RunIdentity) -> Result<()> {
    if identity.model != M::NAME || identity.param_count != M::PARAM_COUNT {
        return Err(Error::Mismatch {
            model: M::NAME.to_string(),
            message: format!(
                "{} is a checkpoint of model {} ({} parameters), this model is {} ({} parameters)",
                path.display(),
                identity.model,
                identity.param_count,
                M::NAME,
                M::PARAM_COUNT
            ),
        });
    }
    Ok(())
}

/// Everything but the model's name: lengths and finiteness of parameters and optimizer buffers, the
/// identity's ranges and q = B / N, the ledger's validity and agreement with `steps` and the identity.
fn check_state<M: DpModel>(path: &Path, checkpoint: &Checkpoint) -> Result<()> {
    let invalid = |location: &str, message: String| Err(Error::format(path, location, message));
    let finite = |location: &str, values: &[f32], expected: usize| -> Result<()> {
        check_len::<M>(path, location, values.len(), expected)?;
        match values.iter().position(|v| !v.is_finite()) {
            Some(i) => invalid(location, format!("value {i} is {}: not finite", values[i])),
            None => Ok(()),
        }
    };
    finite("parameters", &checkpoint.params, M::PARAM_COUNT)?;
    for (buffer, values) in &checkpoint.optimizer.buffers {
        finite(&format!("optimizer buffer {buffer}"), values, M::TRAINED_PARAM_COUNT)?;
    }
    let identity = &checkpoint.identity;
    let sigma = identity.noise_multiplier;
    if !(sigma > 0.0 && sigma.is_finite()) {
        return invalid("noise_multiplier", format!("{sigma} must be positive and finite"));
    }
    let delta = identity.delta;
    if !(delta > 0.0 && delta < 1.0) {
        return invalid("delta", format!("{delta} must be in (0, 1)"));
    }
    let (n, b) = (identity.examples, identity.expected_batch_size);
    if n == 0 || b == 0 || b > n {
        return invalid("expected_batch_size", format!("{b} must be between 1 and the examples ({n})"));
    }
    // The plan computes q as B / N in f64: the same division gives the same bits.
    if identity.sampling_rate != b as f64 / n as f64 {
        return invalid(
            "sampling_rate",
            format!("{} is not expected_batch_size / examples = {b} / {n}", identity.sampling_rate),
        );
    }
    if identity.ranks == 0 {
        return invalid("ranks", "0 ranks: a run has at least one process".to_string());
    }
    if checkpoint.steps > identity.planned_steps {
        return invalid(
            "steps",
            format!("{} steps taken, more than the {} planned", checkpoint.steps, identity.planned_steps),
        );
    }
    let ledger = &checkpoint.ledger;
    ledger.validate().map_err(|e| Error::format(path, "ledger", e.to_string()))?;
    if ledger.steps() != checkpoint.steps {
        return invalid(
            "ledger",
            format!("records {} steps, the checkpoint {}", ledger.steps(), checkpoint.steps),
        );
    }
    // One run has one q and σ (a resumed run must keep them), so every phase has the identity's.
    for (index, entry) in ledger.entries().iter().enumerate() {
        if entry.sampling_rate != identity.sampling_rate || entry.noise_multiplier != sigma {
            return invalid(
                "ledger",
                format!(
                    "phase {index} has q {} and sigma {}, the run q {} and sigma {sigma}",
                    entry.sampling_rate, entry.noise_multiplier, identity.sampling_rate
                ),
            );
        }
    }
    Ok(())
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

/// `len` against the `expected` length (all parameters, or the trained ones for optimizer state).
fn check_len<M: DpModel>(path: &Path, what: &str, len: usize, expected: usize) -> Result<()> {
    if len != expected {
        return Err(Error::format(path, what, format!("{len} values, model {} has {expected}", M::NAME)));
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file in the same directory: write, `fsync`, `rename`
/// over `path`, `fsync` of the directory. An error at any point, including the directory's `fsync`
/// (without it the rename may not survive a crash), is returned; the temporary file is removed.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically_with(path, bytes, sync_directory)
}

/// Makes a rename in `dir` durable.
#[cfg(unix)]
fn sync_directory(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Windows cannot open a directory as a file to `fsync` it; its rename (MoveFileEx) is not made
/// durable this way.
#[cfg(not(unix))]
fn sync_directory(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

/// [`write_atomically`] with the directory's `fsync` given, so that a test can make it fail.
fn write_atomically_with(
    path: &Path,
    bytes: &[u8],
    sync_directory: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<()> {
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
        sync_directory(&dir).map_err(|e| {
            let message = format!(
                "fsync of the directory after writing {} failed, so the file may not survive a crash: {e}",
                file_name.to_string_lossy()
            );
            Error::io(&dir, std::io::Error::new(e.kind(), message))
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_directory_fsync_is_an_error_naming_the_directory() {
        let dir = std::env::temp_dir().join(format!("dp-runtime-fsync-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("checkpoint.safetensors");
        let failing = |_: &Path| Err(std::io::Error::other("injected fsync failure"));
        let err = write_atomically_with(&path, b"bytes", failing).unwrap_err();
        match &err {
            Error::Io { path: reported, source } => {
                assert_eq!(reported, &dir);
                assert!(source.to_string().contains("injected fsync failure"), "{err}");
                assert!(source.to_string().contains("checkpoint.safetensors"), "{err}");
            }
            other => panic!("expected an I/O error, got {other:?}"),
        }
        // The real directory fsync succeeds, and no temporary file is left in either case.
        write_atomically(&path, b"bytes").unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
