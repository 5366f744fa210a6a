//! UCI Adult (census income) with the founding DP-SGD paper's 104 features.
//!
//! The 8 categorical columns are one-hot encoded over the values seen in the training file, `?`
//! excluded (8 + 16 + 7 + 14 + 6 + 5 + 2 + 41 = 99 features on UCI's training file), and the 5
//! numeric columns other than `fnlwgt` (age, education-num, capital-gain, capital-loss,
//! hours-per-week) are standardised with the training mean and standard deviation, which are also
//! applied to the test file: 104 features. Features follow the CSV's column order, each categorical
//! column expanded in place over its categories sorted by name. A `?`, or a category absent from
//! the training file, gives an all-zero block. The label is 1.0 for `>50K` and 0.0 for `<=50K`,
//! with or without the trailing `.` of UCI's test file; any other label is an error.

use std::path::Path;

use crate::data::tabular::{
    self, BinaryLabel, ColumnKind, FeatureColumn, TabularEncoder, TabularSchema, TabularTable,
};
use crate::data::Dataset;
use crate::error::Result;

/// Number of features on UCI's training file.
pub const FEATURES: usize = 104;

/// The feature columns used, in CSV order, with their kind.
pub const COLUMNS: [(&str, ColumnKind); 13] = [
    ("age", ColumnKind::Numeric),
    ("workclass", ColumnKind::Categorical),
    ("education", ColumnKind::Categorical),
    ("education-num", ColumnKind::Numeric),
    ("marital-status", ColumnKind::Categorical),
    ("occupation", ColumnKind::Categorical),
    ("relationship", ColumnKind::Categorical),
    ("race", ColumnKind::Categorical),
    ("sex", ColumnKind::Categorical),
    ("capital-gain", ColumnKind::Numeric),
    ("capital-loss", ColumnKind::Numeric),
    ("hours-per-week", ColumnKind::Numeric),
    ("native-country", ColumnKind::Categorical),
];

/// The schema of UCI's CSV (header names as in UCI's documentation; `fnlwgt` is not used).
pub fn schema() -> TabularSchema {
    TabularSchema {
        features: COLUMNS
            .iter()
            .map(|&(name, kind)| FeatureColumn { name: name.to_string(), kind })
            .collect(),
        label: BinaryLabel {
            column: "income".to_string(),
            positive: ">50K".to_string(),
            negative: "<=50K".to_string(),
            allow_trailing_period: true,
        },
        missing: "?".to_string(),
    }
}

/// Loads `(train, test)` from UCI's two CSV files (raw or gzip); examples are `[104]` on UCI's files.
pub fn load(
    train_path: impl AsRef<Path>,
    test_path: impl AsRef<Path>,
) -> Result<(Dataset<f32>, Dataset<f32>)> {
    let schema = schema();
    let train = tabular::read_table(train_path.as_ref(), &schema)?;
    let test = tabular::read_table(test_path.as_ref(), &schema)?;
    encode_pair(&schema, &train, &test)
}

/// [`load`] on two files held in memory (raw or gzip); the paths name them in errors.
pub fn load_bytes(
    train_path: &Path,
    train_bytes: &[u8],
    test_path: &Path,
    test_bytes: &[u8],
) -> Result<(Dataset<f32>, Dataset<f32>)> {
    let schema = schema();
    let train = tabular::parse_table_bytes(train_path, train_bytes, &schema)?;
    let test = tabular::parse_table_bytes(test_path, test_bytes, &schema)?;
    encode_pair(&schema, &train, &test)
}

/// The encoder fitted on UCI's training file at `train_path`, for feature names and categories.
pub fn fit_encoder(train_path: impl AsRef<Path>) -> Result<TabularEncoder> {
    let schema = schema();
    let train = tabular::read_table(train_path.as_ref(), &schema)?;
    TabularEncoder::fit(&schema, &train)
}

fn encode_pair(
    schema: &TabularSchema,
    train: &TabularTable,
    test: &TabularTable,
) -> Result<(Dataset<f32>, Dataset<f32>)> {
    let encoder = TabularEncoder::fit(schema, train)?;
    let (train, _) = encoder.encode(train)?;
    let (test, _) = encoder.encode(test)?;
    Ok((train, test))
}
