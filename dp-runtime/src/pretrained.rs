//! Initialisation from pretrained weights: a safetensors state dict with PyTorch names, matched to a
//! model's parameters with PyTorch's `load_state_dict` semantics.
//!
//! - **strict** (the default): every parameter of the model must be in the file and every tensor of the
//!   file must be a parameter of the model; otherwise one error lists all missing and all unexpected
//!   keys, as PyTorch does.
//! - **not strict**: parameters missing from the file keep their initial values, tensors the model does
//!   not have are ignored; both lists are in the [`InitReport`].
//! - In both modes a shape that differs from the model's, a dtype other than F32 or a non-finite value
//!   is an error naming the tensor, and nothing is changed.
//! - A [`RenameMap`] renames the file's keys first, for checkpoints whose names differ from the
//!   model's (`bert.encoder.` → `encoder.`, or a prefix dropped).
//!
//! An LSTM's bias is PyTorch's `bias_ih_lK + bias_hh_lK` (see [`crate::pytorch`]).
//!
//! Privacy: the pretrained weights are public side information. The guarantee covers the private
//! training data only if the file does not depend on it (trained on public data, or on other data);
//! nothing here can check that.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::model::DpModel;
use crate::pytorch::{self, Layout, StateDict, StateKeys, StateTensor};

/// One renaming rule: a key equal to `from`, or starting with `from` followed by a `.`, has that part
/// replaced by `to` (an empty `to` drops the prefix and its dot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenameRule {
    /// The prefix (whole dot-separated components) of the file's key.
    pub from: String,
    /// What replaces it.
    pub to: String,
}

/// Rules applied to each key of the file in order; the first that matches renames it, a key no rule
/// matches keeps its name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RenameMap {
    rules: Vec<RenameRule>,
}

impl RenameMap {
    /// No renaming.
    pub fn none() -> Self {
        RenameMap::default()
    }

    /// Rules written `FROM=TO` (`FROM=` drops the prefix); `source` names them in errors (a flag or a
    /// file and line).
    pub fn parse<'a>(rules: impl IntoIterator<Item = (String, &'a str)>) -> Result<Self> {
        let mut parsed = Vec::new();
        for (source, rule) in rules {
            let (from, to) = rule.split_once('=').ok_or_else(|| {
                Error::invalid(
                    source.clone(),
                    format!("{rule:?} is not a rule FROM=TO (FROM= drops a prefix)"),
                )
            })?;
            let (from, to) = (from.trim(), to.trim());
            let valid = |s: &str| !s.starts_with('.') && !s.ends_with('.') && !s.contains("..");
            if from.is_empty() || !valid(from) || !valid(to) {
                return Err(Error::invalid(
                    source,
                    format!("{rule:?}: FROM must be a non-empty dotted name and neither side may start or end with '.'"),
                ));
            }
            parsed.push(RenameRule { from: from.to_string(), to: to.to_string() });
        }
        Ok(RenameMap { rules: parsed })
    }

    /// The model's name for the file's key `key`.
    pub fn apply(&self, key: &str) -> String {
        for RenameRule { from, to } in &self.rules {
            let rest = match key.strip_prefix(from.as_str()) {
                Some("") => "",
                Some(rest) if rest.starts_with('.') => rest,
                _ => continue,
            };
            return match (to.is_empty(), rest) {
                (true, "") => String::new(),
                (true, rest) => rest[1..].to_string(),
                (false, rest) => format!("{to}{rest}"),
            };
        }
        key.to_string()
    }
}

/// How a state dict is matched to the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitOptions {
    /// PyTorch's `strict`: every key matched both ways.
    pub strict: bool,
    /// Renaming of the file's keys, applied first.
    pub rename: RenameMap,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions { strict: true, rename: RenameMap::none() }
    }
}

/// What an initialisation loaded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InitReport {
    /// The model's parameters set from the file (the model's names).
    pub loaded: Vec<String>,
    /// The number of values set.
    pub loaded_values: usize,
    /// The model's parameters not in the file, which kept their initial values (not strict only).
    pub missing: Vec<String>,
    /// The file's keys (after renaming) the model does not have, ignored (not strict only).
    pub unexpected: Vec<String>,
    /// How many of the file's keys a rule renamed.
    pub renamed: usize,
}

impl InitReport {
    /// One line for a person: what was loaded, kept and ignored.
    pub fn summary(&self) -> String {
        let mut line = format!("{} tensors ({} values) loaded", self.loaded.len(), self.loaded_values);
        if self.renamed > 0 {
            line += &format!(", {} renamed", self.renamed);
        }
        if !self.missing.is_empty() {
            line += &format!("; kept their initial values: {}", self.missing.join(", "));
        }
        if !self.unexpected.is_empty() {
            line += &format!("; ignored (not in the model): {}", self.unexpected.join(", "));
        }
        line
    }
}

/// Sets `model`'s parameters from the safetensors file `path` under `options`. On an error the model is
/// unchanged.
pub fn init_from_file<M: DpModel>(model: &mut M, path: &Path, options: &InitOptions) -> Result<InitReport> {
    let dict = pytorch::read(path)?;
    init_from_dict(Layout::of::<M>(), model.params_mut(), path, &dict, options)
}

/// [`init_from_file`] on a state dict already read; `path` names it in errors.
pub fn init_from_dict(
    layout: Layout<'_>,
    params: &mut [f32],
    path: &Path,
    dict: &StateDict,
    options: &InitOptions,
) -> Result<InitReport> {
    if params.len() != layout.param_count {
        return Err(Error::Mismatch {
            model: layout.model.to_string(),
            message: format!("{} parameter values, the model has {}", params.len(), layout.param_count),
        });
    }
    let mut report = InitReport::default();
    // The file's tensors under the model's names; `original` keeps the file's name for errors.
    let mut by_name: BTreeMap<String, (&str, &StateTensor)> = BTreeMap::new();
    for tensor in &dict.tensors {
        let name = options.rename.apply(&tensor.name);
        if name != tensor.name {
            report.renamed += 1;
        }
        if name.is_empty() {
            return Err(Error::format(path, &tensor.name, "renamed to an empty name"));
        }
        if let Some((other, _)) = by_name.insert(name.clone(), (&tensor.name, tensor)) {
            return Err(Error::format(
                path,
                &tensor.name,
                format!("renamed to {name:?}, as {other:?} is: two tensors for one parameter"),
            ));
        }
    }
    let described = |name: &str, original: &str| {
        if name == original {
            name.to_string()
        } else {
            format!("{original} (renamed {name})")
        }
    };

    let model_keys = layout.keys();
    report.unexpected =
        by_name.keys().filter(|name| !model_keys.iter().any(|(key, _)| key == *name)).cloned().collect();

    // Every check before any write, so that an error leaves the parameters as they were.
    let mut updates: Vec<(usize, Vec<f32>, String)> = Vec::new();
    for spec in layout.params {
        let StateKeys { primary, companion } = layout.state_keys(spec);
        let companion_tensor = companion.as_deref().and_then(|c| by_name.get(c));
        let Some(&(original, tensor)) = by_name.get(primary.as_str()) else {
            if let (Some(companion), Some((original, _))) = (&companion, companion_tensor) {
                return Err(Error::format(
                    path,
                    *original,
                    format!("{companion} without {primary}: the model's one LSTM bias is their sum"),
                ));
            }
            report.missing.push(primary);
            continue;
        };
        check_tensor(path, &described(&primary, original), tensor, spec.shape)?;
        let mut values = tensor.values.clone();
        if let Some(&(original, tensor)) = companion_tensor {
            let name = companion.as_deref().unwrap_or_default();
            check_tensor(path, &described(name, original), tensor, spec.shape)?;
            values.iter_mut().zip(&tensor.values).for_each(|(v, c)| *v += c);
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(Error::format(
                    path,
                    &primary,
                    format!("the summed LSTM bias overflows at element {i}"),
                ));
            }
        }
        updates.push((spec.offset, values, primary));
    }
    if options.strict && !(report.missing.is_empty() && report.unexpected.is_empty()) {
        let mut parts = Vec::new();
        if !report.missing.is_empty() {
            parts.push(format!("missing key(s): {}", report.missing.join(", ")));
        }
        if !report.unexpected.is_empty() {
            parts.push(format!("unexpected key(s): {}", report.unexpected.join(", ")));
        }
        return Err(Error::format(
            path,
            "state dict",
            format!(
                "does not match {} ({}); rename keys or load it not strict to keep missing parameters' initial values",
                layout.model,
                parts.join("; ")
            ),
        ));
    }
    for (offset, values, name) in updates {
        params[offset..offset + values.len()].copy_from_slice(&values);
        report.loaded_values += values.len();
        report.loaded.push(name);
    }
    Ok(report)
}

fn check_tensor(path: &Path, name: &str, tensor: &StateTensor, shape: &[usize]) -> Result<()> {
    if tensor.shape != shape {
        return Err(Error::format(
            path,
            name,
            format!("shape {:?}, the model's parameter is {shape:?}", tensor.shape),
        ));
    }
    if let Some(i) = tensor.values.iter().position(|v| !v.is_finite()) {
        return Err(Error::format(path, name, format!("element {i} is not finite")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ParamSpec;

    const PARAMS: &[ParamSpec] = &[
        ParamSpec { name: "fc1.weight", shape: &[2, 3], offset: 0, len: 6, group: 0 },
        ParamSpec { name: "fc1.bias", shape: &[2], offset: 6, len: 2, group: 0 },
        ParamSpec { name: "lstm.weight_ih_l0", shape: &[4, 1], offset: 8, len: 4, group: 1 },
        ParamSpec { name: "lstm.bias", shape: &[4], offset: 12, len: 4, group: 1 },
    ];
    const LAYOUT: Layout<'static> = Layout { model: "Toy", params: PARAMS, param_count: 16 };

    fn tensor(name: &str, shape: &[usize], value: f32) -> StateTensor {
        let len = shape.iter().product();
        StateTensor { name: name.into(), shape: shape.to_vec(), values: vec![value; len] }
    }

    fn dict(tensors: Vec<StateTensor>) -> StateDict {
        StateDict { tensors, metadata: Default::default() }
    }

    fn full(prefix: &str) -> Vec<StateTensor> {
        vec![
            tensor(&format!("{prefix}fc1.weight"), &[2, 3], 1.0),
            tensor(&format!("{prefix}fc1.bias"), &[2], 2.0),
            tensor(&format!("{prefix}lstm.weight_ih_l0"), &[4, 1], 3.0),
            tensor(&format!("{prefix}lstm.bias_ih_l0"), &[4], 0.25),
            tensor(&format!("{prefix}lstm.bias_hh_l0"), &[4], 0.5),
        ]
    }

    fn load(tensors: Vec<StateTensor>, options: &InitOptions) -> (Vec<f32>, Result<InitReport>) {
        let mut params = vec![-9.0; 16];
        let report = init_from_dict(LAYOUT, &mut params, Path::new("w.safetensors"), &dict(tensors), options);
        (params, report)
    }

    fn message(result: Result<InitReport>) -> String {
        result.expect_err("must be refused").to_string()
    }

    #[test]
    fn strict_full_dict_sets_every_value_and_sums_the_lstm_biases() {
        let (params, report) = load(full(""), &InitOptions::default());
        let report = report.unwrap();
        assert_eq!(&params[..6], &[1.0; 6]);
        assert_eq!(&params[6..8], &[2.0; 2]);
        assert_eq!(&params[8..12], &[3.0; 4]);
        assert_eq!(&params[12..], &[0.75; 4]);
        assert_eq!(report.loaded_values, 16);
        assert!(report.missing.is_empty() && report.unexpected.is_empty());
    }

    #[test]
    fn strict_lists_every_missing_and_unexpected_key_and_changes_nothing() {
        let mut tensors = full("");
        tensors.retain(|t| t.name != "fc1.bias" && t.name != "lstm.weight_ih_l0");
        tensors.push(tensor("head.weight", &[1], 0.0));
        tensors.push(tensor("pooler.dense.bias", &[1], 0.0));
        let (params, result) = load(tensors, &InitOptions::default());
        let text = message(result);
        assert!(text.contains("missing key(s): fc1.bias, lstm.weight_ih_l0"), "{text}");
        assert!(text.contains("unexpected key(s): head.weight, pooler.dense.bias"), "{text}");
        assert!(params.iter().all(|&v| v == -9.0));
    }

    #[test]
    fn not_strict_keeps_missing_initial_values_and_ignores_unexpected() {
        let mut tensors = full("");
        tensors.retain(|t| t.name != "fc1.bias");
        tensors.push(tensor("head.weight", &[1], 0.0));
        let options = InitOptions { strict: false, ..InitOptions::default() };
        let (params, report) = load(tensors, &options);
        let report = report.unwrap();
        assert_eq!(&params[6..8], &[-9.0; 2]);
        assert_eq!(&params[..6], &[1.0; 6]);
        assert_eq!(report.missing, ["fc1.bias"]);
        assert_eq!(report.unexpected, ["head.weight"]);
        assert_eq!(report.loaded.len(), 3);
    }

    #[test]
    fn shape_mismatch_is_an_error_naming_the_tensor_in_both_modes() {
        for strict in [true, false] {
            let mut tensors = full("model.");
            tensors[1] = tensor("model.fc1.bias", &[3], 2.0);
            let rename = RenameMap::parse([("rename".to_string(), "model=")]).unwrap();
            let (params, result) = load(tensors, &InitOptions { strict, rename });
            let text = message(result);
            assert!(text.contains("model.fc1.bias (renamed fc1.bias)"), "{text}");
            assert!(text.contains("shape [3], the model's parameter is [2]"), "{text}");
            assert!(params.iter().all(|&v| v == -9.0));
        }
    }

    #[test]
    fn non_finite_values_are_refused() {
        let mut tensors = full("");
        tensors[2].values[1] = f32::NAN;
        let text = message(load(tensors, &InitOptions::default()).1);
        assert!(text.contains("lstm.weight_ih_l0") && text.contains("element 1 is not finite"), "{text}");
    }

    #[test]
    fn rename_rules_match_whole_components_first_rule_wins() {
        let map =
            RenameMap::parse(["bert.encoder=encoder", "bert=", "fc=head"].map(|r| ("rename".to_string(), r)))
                .unwrap();
        assert_eq!(map.apply("bert.encoder.layer.0.weight"), "encoder.layer.0.weight");
        assert_eq!(map.apply("bert.pooler.bias"), "pooler.bias");
        assert_eq!(map.apply("bertx.bias"), "bertx.bias");
        assert_eq!(map.apply("fc.weight"), "head.weight");
        assert_eq!(map.apply("fc1.weight"), "fc1.weight");
        assert_eq!(map.apply("fc"), "head");
    }

    #[test]
    fn renaming_two_keys_onto_one_parameter_is_an_error() {
        let mut tensors = full("");
        tensors.push(tensor("old.fc1.bias", &[2], 5.0));
        let rename = RenameMap::parse([("rename".to_string(), "old=")]).unwrap();
        let text = message(load(tensors, &InitOptions { strict: true, rename }).1);
        assert!(text.contains("two tensors for one parameter"), "{text}");
    }

    #[test]
    fn bad_rules_are_refused_with_their_source() {
        for bad in ["noequals", "=x", ".a=b", "a=b.", "a..b=c"] {
            let text = RenameMap::parse([("file.txt:3".to_string(), bad)]).unwrap_err().to_string();
            assert!(text.contains("file.txt:3"), "{bad}: {text}");
        }
    }

    #[test]
    fn an_lstm_companion_bias_without_its_primary_is_refused() {
        let mut tensors = full("");
        tensors.retain(|t| t.name != "lstm.bias_ih_l0");
        let options = InitOptions { strict: false, ..InitOptions::default() };
        let text = message(load(tensors, &options).1);
        assert!(text.contains("lstm.bias_hh_l0 without lstm.bias_ih_l0"), "{text}");
    }
}
