//! `dp models` (every built-in model with its input shape and parameter count) and
//! `dp describe --model NAME` (the compiled plan of one model, layer by layer).

use clap::Args;
use dp_runtime::{DpModel, Result};
use serde_json::json;

use super::datasets::{DataSource, NpyInput};
use super::registry::{self, ModelEntry, ModelVisitor};
use super::train::MOMENTUM;
use crate::models::recipe::Recipe;

/// Arguments of `dp models`.
#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// One JSON object per model instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `dp describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// The model's command-line name (see `dp models`).
    #[arg(long)]
    pub model: String,
}

/// One row of `dp models`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelRow {
    /// The command-line name.
    pub name: &'static str,
    /// The Rust type's name.
    pub model: &'static str,
    /// The shape of one example's input.
    pub input_shape: Vec<usize>,
    /// The input element: `f32` or `u32` token ids.
    pub input: &'static str,
    /// Trainable parameters.
    pub parameters: usize,
    /// One line about the model.
    pub summary: &'static str,
    /// What `--data` must point at.
    pub data: &'static str,
    /// The recipe `dp train` uses for every hyperparameter not given.
    pub recipe: Recipe,
    /// Whether the model has a device program (`--device cuda:N`), or why not.
    pub device: &'static str,
}

struct Row;

impl ModelVisitor for Row {
    type Output = ModelRow;
    fn visit<M, D>(self, entry: ModelEntry) -> ModelRow
    where
        M: DpModel,
        M::Input: NpyInput,
        D: DataSource<Input = M::Input>,
    {
        ModelRow {
            name: entry.name,
            model: M::NAME,
            input_shape: M::INPUT_SHAPE.to_vec(),
            input: std::any::type_name::<M::Input>(),
            parameters: M::PARAM_COUNT,
            summary: entry.summary,
            data: entry.data,
            recipe: entry.recipe,
            device: M::DEVICE_UNSUPPORTED.unwrap_or("device program"),
        }
    }
}

/// The rows of every registered model.
pub fn rows() -> Result<Vec<ModelRow>> {
    registry::NAMES.iter().map(|name| registry::dispatch(name, Row)).collect()
}

/// Prints every built-in model.
pub fn run_models(args: ModelsArgs) -> Result<()> {
    let rows = rows()?;
    if args.json {
        for row in &rows {
            println!("{}", json!(row));
        }
        return Ok(());
    }
    let shape = |row: &ModelRow| {
        let dims = row.input_shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ");
        format!("[{dims}] {}", row.input)
    };
    // Columns as wide as their longest entry, so that every row lines up.
    let name_w = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max("name".len());
    let model_w = rows.iter().map(|r| r.model.len()).max().unwrap_or(0).max("model".len());
    println!("{:<name_w$} {:<model_w$} {:<18} {:>10}  description", "name", "model", "input", "parameters");
    for row in &rows {
        println!(
            "{:<name_w$} {:<model_w$} {:<18} {:>10}  {}",
            row.name,
            row.model,
            shape(row),
            row.parameters,
            row.summary
        );
    }
    println!(
        "\non a GPU (--device cuda:N, a build with --features cuda; docs/GPU.md says which have run on one):"
    );
    for row in &rows {
        println!("{:<name_w$} {}", row.name, row.device);
    }
    println!("\nrecipes: what `dp train` uses for each flag not given (SGD with momentum {MOMENTUM}, cosine decay)");
    println!(
        "{:<name_w$} {:>12} {:>8} {:>11} {:>8} {:>19} {:>7} {:>17}  source",
        "name", "--batch-size", "--epochs", "--clip-norm", "--lr", "--final-lr-fraction", "--ema", "inputs"
    );
    for row in &rows {
        let r = &row.recipe;
        let ema = r.ema_decay.map_or_else(|| "-".to_string(), |d| d.to_string());
        let inputs = r
            .input_standardization
            .map_or_else(|| "as loaded".to_string(), |s| format!("(x-{})/{}", s.mean, s.std));
        println!(
            "{:<name_w$} {:>12} {:>8} {:>11} {:>8} {:>19} {:>7} {:>17}  {}",
            row.name, r.batch_size, r.epochs, r.clip_norm, r.lr, r.final_lr_fraction, ema, inputs, r.source
        );
    }
    Ok(())
}

struct Describe;

impl ModelVisitor for Describe {
    type Output = String;
    fn visit<M, D>(self, entry: ModelEntry) -> String
    where
        M: DpModel,
        M::Input: NpyInput,
        D: DataSource<Input = M::Input>,
    {
        format!("{}\ndata (--data): {}\n", M::describe().trim_end(), entry.data)
    }
}

/// Prints the compiled plan of one model.
pub fn run_describe(args: DescribeArgs) -> Result<()> {
    print!("{}", registry::dispatch(&args.model, Describe)?);
    Ok(())
}
