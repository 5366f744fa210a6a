//! Import and export of a model's parameters as a PyTorch `state_dict` in a safetensors file.
//!
//! Names and layouts are the model's own ([`DpModel::PARAMS`] are PyTorch's: `fc1.weight` `[out, in]`,
//! `conv1.weight` `[out, in, kh, kw]`, `embedding.weight` `[vocab, dim]`, `lstm.weight_ih_l0` `[4h, d]`
//! with gate rows i, f, g, o), with one difference, which this module is the one place to handle:
//! an LSTM here has ONE trainable bias per gate, PyTorch two (`bias_ih_l0` and `bias_hh_l0`, always
//! used as their sum). So
//! - on import the model's bias is `bias_ih_l0 + bias_hh_l0` (a missing `bias_hh_l0` counts as zero);
//! - on export it is written as `bias_ih_l0`, with `bias_hh_l0` zero.
//!
//! A model's LSTM bias is recognised by its name: a parameter `P.bias_ih_lK` of a model without
//! `P.bias_hh_lK`, or a parameter `P.bias` of a layer that has `P.weight_ih_lK`.
//!
//! Files hold F32 tensors; any other dtype, another shape, a non-finite value, a missing parameter or
//! a tensor the model does not have is an error naming the file and the tensor.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::checkpoint::write_atomically;
use crate::error::{Error, Result};
use crate::model::{DpModel, ParamSpec};

/// One F32 tensor of a state dict.
#[derive(Debug, Clone, PartialEq)]
pub struct StateTensor {
    /// The state-dict key, e.g. `fc1.weight`.
    pub name: String,
    /// PyTorch's shape.
    pub shape: Vec<usize>,
    /// The values in C order.
    pub values: Vec<f32>,
}

/// A safetensors file as read: its tensors (sorted by name) and its metadata.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StateDict {
    /// Every tensor, sorted by name.
    pub tensors: Vec<StateTensor>,
    /// The header's `__metadata__` strings (empty when the file has none).
    pub metadata: HashMap<String, String>,
}

/// The state-dict keys of one model parameter: the key that carries its value and, for an LSTM bias,
/// the companion key PyTorch adds (zero on export, added on import).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateKeys {
    /// The key holding the parameter's value.
    pub primary: String,
    /// `bias_hh_lK` for an LSTM bias; `None` otherwise.
    pub companion: Option<String>,
}

/// The parameter layout of a model: what the mapping needs, without the model's code.
#[derive(Debug, Clone, Copy)]
pub struct Layout<'a> {
    /// The model's name, for errors.
    pub model: &'a str,
    /// Every parameter tensor, in buffer order.
    pub params: &'a [ParamSpec],
    /// The length of the flat buffer.
    pub param_count: usize,
}

impl Layout<'static> {
    /// The layout of model `M`.
    pub fn of<M: DpModel>() -> Self {
        Layout { model: M::NAME, params: M::PARAMS, param_count: M::PARAM_COUNT }
    }
}

impl Layout<'_> {
    /// How parameter `spec` is named in a PyTorch state dict.
    pub fn state_keys(&self, spec: &ParamSpec) -> StateKeys {
        let has = |name: &str| self.params.iter().any(|s| s.name == name);
        if let Some((layer, layer_index)) = spec.name.rsplit_once(".bias_ih_l") {
            let companion = format!("{layer}.bias_hh_l{layer_index}");
            if !has(&companion) {
                return StateKeys { primary: spec.name.to_string(), companion: Some(companion) };
            }
        }
        if let Some(layer) = spec.name.strip_suffix(".bias") {
            let recurrent = self
                .params
                .iter()
                .find_map(|s| s.name.strip_prefix(layer).and_then(|rest| rest.strip_prefix(".weight_ih_l")));
            if let Some(layer_index) = recurrent {
                return StateKeys {
                    primary: format!("{layer}.bias_ih_l{layer_index}"),
                    companion: Some(format!("{layer}.bias_hh_l{layer_index}")),
                };
            }
        }
        StateKeys { primary: spec.name.to_string(), companion: None }
    }

    /// Every key of the full PyTorch state dict with its shape, in parameter order.
    pub fn keys(&self) -> Vec<(String, Vec<usize>)> {
        let mut keys = Vec::new();
        for spec in self.params {
            let StateKeys { primary, companion } = self.state_keys(spec);
            keys.push((primary, spec.shape.to_vec()));
            if let Some(companion) = companion {
                keys.push((companion, spec.shape.to_vec()));
            }
        }
        keys
    }

    /// The full PyTorch state dict of a flat buffer: LSTM biases as `bias_ih_lK` with a zero
    /// `bias_hh_lK`.
    pub fn export(&self, params: &[f32]) -> Result<Vec<StateTensor>> {
        if params.len() != self.param_count {
            return Err(Error::Mismatch {
                model: self.model.to_string(),
                message: format!("{} parameter values, the model has {}", params.len(), self.param_count),
            });
        }
        let mut tensors = Vec::new();
        for spec in self.params {
            let StateKeys { primary, companion } = self.state_keys(spec);
            let values = params[spec.offset..spec.offset + spec.len].to_vec();
            tensors.push(StateTensor { name: primary, shape: spec.shape.to_vec(), values });
            if let Some(companion) = companion {
                let zeros = vec![0.0; spec.len];
                tensors.push(StateTensor { name: companion, shape: spec.shape.to_vec(), values: zeros });
            }
        }
        Ok(tensors)
    }

    /// The flat buffer from a state dict read from `path`: every parameter present with its shape and
    /// finite; an LSTM bias is `bias_ih_lK + bias_hh_lK`; a tensor the model does not have (e.g. from
    /// another model's file) is an error naming it.
    pub fn import(&self, path: &Path, dict: &StateDict) -> Result<Vec<f32>> {
        let by_name: BTreeMap<&str, &StateTensor> =
            dict.tensors.iter().map(|t| (t.name.as_str(), t)).collect();
        let keys = self.keys();
        for name in by_name.keys() {
            if !keys.iter().any(|(key, _)| key == name) {
                return Err(Error::format(
                    path,
                    *name,
                    format!("{} has no parameter of this name (is this another model's file?)", self.model),
                ));
            }
        }
        let mut params = vec![0.0f32; self.param_count];
        for spec in self.params {
            let StateKeys { primary, companion } = self.state_keys(spec);
            let out = &mut params[spec.offset..spec.offset + spec.len];
            let tensor = by_name
                .get(primary.as_str())
                .ok_or_else(|| Error::format(path, &primary, format!("missing (model {})", self.model)))?;
            check_shape(path, tensor, spec.shape)?;
            out.copy_from_slice(&tensor.values);
            if let Some(tensor) = companion.as_deref().and_then(|c| by_name.get(c)) {
                check_shape(path, tensor, spec.shape)?;
                // PyTorch adds the two biases in f32 too.
                out.iter_mut().zip(&tensor.values).for_each(|(o, v)| *o += v);
            }
            if let Some(i) = out.iter().position(|v| !v.is_finite()) {
                return Err(Error::format(path, &primary, format!("element {i} is not finite")));
            }
        }
        Ok(params)
    }

    /// A flat buffer written as exactly the tensors named in `keys` (each a key of the state dict),
    /// in that order: how `dp step` writes back the tensors of its input file.
    pub fn export_keys(&self, params: &[f32], keys: &[String]) -> Result<Vec<StateTensor>> {
        let full = self.export(params)?;
        keys.iter()
            .map(|key| {
                full.iter().find(|t| &t.name == key).cloned().ok_or_else(|| Error::Mismatch {
                    model: self.model.to_string(),
                    message: format!("{key} is not a tensor of its state dict"),
                })
            })
            .collect()
    }
}

/// The parameters of model `M` from the safetensors file `path` (a PyTorch state dict), with the
/// names of the tensors the file holds (to write the same set back).
pub fn load<M: DpModel>(path: &Path) -> Result<(Vec<f32>, StateDict)> {
    let dict = read(path)?;
    let params = Layout::of::<M>().import(path, &dict)?;
    Ok((params, dict))
}

/// Reads every tensor of a safetensors file (F32 only), sorted by name, and its metadata.
pub fn read(path: &Path) -> Result<StateDict> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse(path, &bytes)
}

/// [`read`] on bytes held in memory; `path` names them in errors.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<StateDict> {
    let header_error = |e: safetensors::SafeTensorError| {
        Error::format(path, "header", format!("not a safetensors file: {e}"))
    };
    let tensors = SafeTensors::deserialize(bytes).map_err(header_error)?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(header_error)?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let mut names = tensors.names();
    names.sort_unstable();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let view = tensors.tensor(name).map_err(|e| Error::format(path, name, e.to_string()))?;
        if view.dtype() != Dtype::F32 {
            return Err(Error::format(path, name, format!("dtype {:?}, F32 expected", view.dtype())));
        }
        let values =
            view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        out.push(StateTensor { name: name.to_string(), shape: view.shape().to_vec(), values });
    }
    Ok(StateDict { tensors: out, metadata })
}

/// Writes `tensors` (and `metadata`, if any) as a safetensors file, atomically (temporary file,
/// fsync, rename): a failure leaves no partial file at `path`.
pub fn write(path: &Path, tensors: &[StateTensor], metadata: &HashMap<String, String>) -> Result<()> {
    let bytes: Vec<Vec<u8>> =
        tensors.iter().map(|t| t.values.iter().flat_map(|v| v.to_le_bytes()).collect()).collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| {
            TensorView::new(Dtype::F32, t.shape.clone(), b)
                .map(|view| (t.name.clone(), view))
                .map_err(|e| Error::format(path, &t.name, e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = (!metadata.is_empty()).then(|| metadata.clone());
    let serialized = safetensors::serialize(views, metadata)
        .map_err(|e| Error::format(path, "serialize", e.to_string()))?;
    write_atomically(path, &serialized)
}

fn check_shape(path: &Path, tensor: &StateTensor, shape: &[usize]) -> Result<()> {
    if tensor.shape != shape {
        return Err(Error::format(
            path,
            &tensor.name,
            format!("shape {:?}, the model has {shape:?} (is this another model's file?)", tensor.shape),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn spec(name: &'static str, shape: &'static [usize], offset: usize, len: usize) -> ParamSpec {
        ParamSpec { name, shape, offset, len, group: 0 }
    }

    /// An LSTM of hidden size 1 over inputs of width 2 (4 gate rows), then a 1 → 2 linear layer.
    const LSTM_PARAMS: [ParamSpec; 5] = [
        spec("lstm.weight_ih_l0", &[4, 2], 0, 8),
        spec("lstm.weight_hh_l0", &[4, 1], 8, 4),
        spec("lstm.bias", &[4], 12, 4),
        spec("fc.weight", &[2, 1], 16, 2),
        spec("fc.bias", &[2], 18, 2),
    ];

    fn lstm_layout() -> Layout<'static> {
        Layout { model: "Tiny", params: &LSTM_PARAMS, param_count: 20 }
    }

    fn tensor(name: &str, shape: &[usize], values: Vec<f32>) -> StateTensor {
        StateTensor { name: name.into(), shape: shape.to_vec(), values }
    }

    #[test]
    fn lstm_bias_is_two_pytorch_tensors_and_linear_names_are_unchanged() {
        let keys: Vec<String> = lstm_layout().keys().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "lstm.weight_ih_l0",
                "lstm.weight_hh_l0",
                "lstm.bias_ih_l0",
                "lstm.bias_hh_l0",
                "fc.weight",
                "fc.bias"
            ]
        );
        // A model that already names its single bias as PyTorch's first one.
        let named = [spec("rnn.weight_ih_l0", &[4, 2], 0, 8), spec("rnn.bias_ih_l0", &[4], 8, 4)];
        let layout = Layout { model: "Named", params: &named, param_count: 12 };
        let keys: Vec<String> = layout.keys().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["rnn.weight_ih_l0", "rnn.bias_ih_l0", "rnn.bias_hh_l0"]);
    }

    #[test]
    fn import_adds_the_two_biases_and_export_writes_bias_hh_zero() {
        let layout = lstm_layout();
        let dict = StateDict {
            tensors: vec![
                tensor("lstm.weight_ih_l0", &[4, 2], (0..8).map(|i| i as f32).collect()),
                tensor("lstm.weight_hh_l0", &[4, 1], vec![8.0, 9.0, 10.0, 11.0]),
                tensor("lstm.bias_ih_l0", &[4], vec![1.0, 2.0, 3.0, 4.0]),
                tensor("lstm.bias_hh_l0", &[4], vec![0.5, -2.0, 0.25, 1.0]),
                tensor("fc.weight", &[2, 1], vec![-1.0, -2.0]),
                tensor("fc.bias", &[2], vec![0.125, 7.0]),
            ],
            metadata: HashMap::new(),
        };
        let params = layout.import(Path::new("w.safetensors"), &dict).unwrap();
        assert_eq!(&params[12..16], &[1.5, 0.0, 3.25, 5.0]);
        assert_eq!(&params[..12], &(0..12).map(|i| i as f32).collect::<Vec<_>>()[..]);
        assert_eq!(&params[16..], &[-1.0, -2.0, 0.125, 7.0]);

        let exported = layout.export(&params).unwrap();
        let get = |name: &str| exported.iter().find(|t| t.name == name).unwrap().values.clone();
        assert_eq!(get("lstm.bias_ih_l0"), [1.5, 0.0, 3.25, 5.0]);
        assert_eq!(get("lstm.bias_hh_l0"), [0.0; 4]);
        assert_eq!(exported.len(), 6);

        // Without bias_hh_l0 the file still loads (PyTorch's sum with zero), and only the keys asked for
        // are written back.
        let mut without = dict.clone();
        without.tensors.retain(|t| t.name != "lstm.bias_hh_l0");
        let params = layout.import(Path::new("w.safetensors"), &without).unwrap();
        assert_eq!(&params[12..16], &[1.0, 2.0, 3.0, 4.0]);
        let keys: Vec<String> = without.tensors.iter().map(|t| t.name.clone()).collect();
        let written = layout.export_keys(&params, &keys).unwrap();
        assert_eq!(written.iter().map(|t| t.name.clone()).collect::<Vec<_>>(), keys);
    }

    #[test]
    fn another_models_tensors_are_errors_naming_them() {
        let layout = lstm_layout();
        let path = Path::new("other.safetensors");
        let base = layout.export(&[0.5; 20]).unwrap();
        let err = |tensors: Vec<StateTensor>| {
            layout.import(path, &StateDict { tensors, metadata: HashMap::new() }).unwrap_err().to_string()
        };
        let mut extra = base.clone();
        extra.push(tensor("conv1.weight", &[1], vec![0.0]));
        assert!(err(extra).contains("conv1.weight"), "unknown tensor");
        let missing: Vec<_> = base.iter().filter(|t| t.name != "fc.bias").cloned().collect();
        assert!(err(missing).contains("fc.bias: missing"));
        let mut reshaped = base.clone();
        reshaped[4] = tensor("fc.weight", &[1, 2], vec![0.0, 0.0]);
        assert!(err(reshaped).contains("fc.weight: shape [1, 2]"));
        let mut nan = base.clone();
        nan[5].values[1] = f32::NAN;
        assert!(err(nan).contains("fc.bias: element 1 is not finite"));
    }

    #[test]
    fn files_round_trip_with_metadata_and_reject_other_dtypes() {
        let dir = std::env::temp_dir().join(format!("dp-pytorch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.safetensors");
        let tensors = lstm_layout().export(&(0..20).map(|i| i as f32 * 0.5).collect::<Vec<_>>()).unwrap();
        let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
        write(&path, &tensors, &metadata).unwrap();
        let read_back = read(&path).unwrap();
        assert_eq!(read_back.metadata, metadata);
        let mut sorted = tensors.clone();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(read_back.tensors, sorted);

        let bytes = [1u8, 0, 0, 0, 0, 0, 0, 0];
        let view = TensorView::new(Dtype::F64, vec![1], &bytes).unwrap();
        let f64_file = safetensors::serialize([("fc.bias", view)], None).unwrap();
        let err = parse(&path, &f64_file).unwrap_err().to_string();
        assert!(err.contains("fc.bias: dtype F64, F32 expected"), "{err}");
        assert!(parse(&path, b"garbage").unwrap_err().to_string().contains("header"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
