//! `dp train --save-merged`: a LoRA model's adapters folded into its base weights, written as the plain
//! model's state dict (checked against the run's own checkpoint), and refused for a model without LoRA.

mod common;

use common::{dp, s, text, TempDir, ADULT};
use dp::models::{TextTransformer, TextTransformerLora};
use dp::pytorch::{self, Layout, StateTensor};
use dp::DpModel;

/// A reviews CSV of `rows` short reviews, half of them recommended.
fn write_reviews(path: &std::path::Path, rows: usize) {
    let words =
        ["lovely", "soft", "poor", "fit", "small", "great", "returned", "fabric", "color", "comfortable"];
    let mut csv = String::from("Review Text,Recommended IND\n");
    for i in 0..rows {
        let review: Vec<&str> = (0..6 + i % 5).map(|k| words[(i * 7 + k * 3) % words.len()]).collect();
        csv += &format!("\"{} {i}\",{}\n", review.join(" "), i % 2);
    }
    std::fs::write(path, csv).unwrap();
}

fn tensor<'a>(tensors: &'a [StateTensor], name: &str) -> &'a StateTensor {
    tensors.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("{name} missing"))
}

#[test]
fn merged_weights_are_base_plus_scaled_adapters_under_the_plain_models_names() {
    let dir = TempDir::new("cli-lora", "merge");
    let (data, checkpoint, merged) =
        (dir.path("reviews.csv"), dir.path("run.safetensors"), dir.path("merged.safetensors"));
    write_reviews(&data, 80);
    let out = dp(&[
        "train",
        "--model",
        "text-transformer-lora",
        "--data",
        s(&data),
        "--target-epsilon",
        "8",
        "--delta",
        "1e-3",
        "--batch-size",
        "8",
        "--epochs",
        "1",
        "--lr",
        "0.5",
        "--save",
        s(&checkpoint),
        "--save-merged",
        s(&merged),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("LoRA adapters merged"), "{}", text(&out.stderr));

    let trained = pytorch::read(&checkpoint).unwrap().tensors;
    let written = pytorch::read(&merged).unwrap().tensors;
    // Exactly the plain transformer's keys and shapes: what `--init` of `text-transformer` loads strictly.
    let mut expected = Layout::of::<TextTransformer>().keys();
    expected.sort();
    let mut keys: Vec<(String, Vec<usize>)> =
        written.iter().map(|t| (t.name.clone(), t.shape.clone())).collect();
    keys.sort();
    assert_eq!(keys, expected);

    let mut merged_layers = 0;
    for spec in TextTransformerLora::LORA {
        let (w, a, b) =
            (tensor(&trained, spec.weight), tensor(&trained, spec.lora_a), tensor(&trained, spec.lora_b));
        assert!(
            b.values.iter().any(|&v| v != 0.0),
            "{}: B still zero, the check would be trivial",
            spec.lora_b
        );
        let (rank, inputs) = (a.shape[0], a.shape[1]);
        let out_w = tensor(&written, spec.weight);
        for (o, row) in out_w.values.chunks_exact(inputs).enumerate() {
            for (j, &value) in row.iter().enumerate() {
                let ba: f64 = (0..rank)
                    .map(|k| f64::from(b.values[o * rank + k]) * f64::from(a.values[k * inputs + j]))
                    .sum();
                let want = f64::from(w.values[o * inputs + j]) + f64::from(spec.scale) * ba;
                assert!(
                    (f64::from(value) - want).abs() <= 1e-6 * (1.0 + want.abs()),
                    "{} [{o}, {j}]: {value} vs {want}",
                    spec.weight
                );
            }
        }
        merged_layers += 1;
    }
    assert_eq!(merged_layers, 4);
    // Every other tensor is the trained one, unchanged.
    let lora_weights: Vec<&str> = TextTransformerLora::LORA.iter().map(|spec| spec.weight).collect();
    for t in written.iter().filter(|t| !lora_weights.contains(&t.name.as_str())) {
        assert_eq!(t.values, tensor(&trained, &t.name).values, "{}", t.name);
    }
}

#[test]
fn save_merged_is_refused_for_a_model_without_lora_and_writes_nothing() {
    let dir = TempDir::new("cli-lora", "refused");
    let merged = dir.path("merged.safetensors");
    let out = dp(&[
        "train",
        "--model",
        "ffnn",
        "--data",
        ADULT,
        "--target-epsilon",
        "1",
        "--max-steps",
        "1",
        "--save-merged",
        s(&merged),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("--save-merged") && stderr.contains("no LoRA layers"), "{stderr}");
    assert!(!merged.exists());
}
