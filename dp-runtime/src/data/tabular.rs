//! CSV files described by a schema: named numeric and categorical feature columns and a binary label.
//!
//! The header row is required and columns are found by name, so column order and extra columns do
//! not matter. A [`TabularEncoder`] turns a parsed table into features; there are two kinds, and
//! only the first keeps preprocessing outside the private data:
//! - [`TabularEncoder::public`] is built from public knowledge alone, given column by column in a
//!   [`PublicEncoding`]: a categorical column lists its categories (from the dataset's published
//!   description), a numeric column its bounds (from the published value range or top codes).
//!   Neither the width nor any feature of a row depends on the other rows.
//! - [`TabularEncoder::fit_to_private_data_unaccounted`] fits the categories seen in a training
//!   table and the mean and standard deviation of each numeric column. It reads every private row
//!   with no privacy accounting: removing one row can change every other row's features and the
//!   width itself. Its [`TabularEncoder::provenance`] says so.
//!
//! Encodings, applied unchanged to every file:
//! - a categorical column becomes one 0/1 feature per listed category, in list order (the public
//!   list's order, or sorted by name when fitted); the missing marker (e.g. `?`) and a category
//!   not in the list both give an all-zero block (an implicit "other" level, so the width never
//!   changes) and are counted in [`EncodeCounts`];
//! - a numeric column with public bounds `[low, high]` and a public `unit` ([`NumericScale`]) is
//!   clipped to the bounds (and counted when it was outside) and encoded as `(x − low) / unit`;
//!   [`NumericScale::unit_interval`] takes the whole range as the unit, giving `[0, 1]`;
//! - a numeric column fitted to private data becomes `(x − mean) / std` with the training
//!   statistics (population standard deviation; a constant column uses std 1).
//!
//! A missing or non-finite number is an error. Features appear in schema order, each categorical
//! column expanded in place.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use crate::data::{source, Dataset, Provenance};
use crate::error::{Error, Result};

/// How one feature column is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// A number: clipped and scaled by public bounds, or standardised when fitted to private data.
    Numeric,
    /// A category, one-hot encoded over a category list.
    Categorical,
}

/// Public bounds and unit of a numeric column: a value is clipped to `[low, high]`, then encoded as
/// `(x − low) / unit`, so it lies in `[0, (high − low) / unit]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NumericScale {
    /// The lower bound (encodes to 0).
    pub low: f64,
    /// The upper bound.
    pub high: f64,
    /// The width of one unit of the encoded feature.
    pub unit: f64,
}

impl NumericScale {
    /// `[low, high]` onto `[0, 1]` (the unit is the whole range).
    pub fn unit_interval(low: f64, high: f64) -> Self {
        NumericScale { low, high, unit: high - low }
    }

    /// The encoded value of `x`, and whether `x` had to be clipped.
    fn scale(&self, x: f64) -> (f64, bool) {
        let clipped = x.clamp(self.low, self.high);
        ((clipped - self.low) / self.unit, clipped != x)
    }

    fn check(&self, column: &str) -> Result<()> {
        let finite = self.low.is_finite() && self.high.is_finite() && self.unit.is_finite();
        if finite && self.low < self.high && self.unit > 0.0 {
            Ok(())
        } else {
            Err(Error::invalid(
                "schema",
                format!(
                    "column '{column}': bounds [{}, {}] and unit {} must be finite with low < high and unit > 0",
                    self.low, self.high, self.unit
                ),
            ))
        }
    }
}

/// Public knowledge of how one feature column encodes, for [`TabularEncoder::public`].
#[derive(Debug, Clone, PartialEq)]
pub enum PublicEncoding {
    /// A numeric column with public bounds.
    Scaled(NumericScale),
    /// A categorical column with its published categories, in feature order.
    OneHot(Vec<String>),
}

/// One feature column of a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureColumn {
    /// The column's name in the header row.
    pub name: String,
    /// How the column is encoded.
    pub kind: ColumnKind,
}

/// A binary label column: `positive` gives 1.0, `negative` 0.0, anything else is an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryLabel {
    /// The label column's name in the header row.
    pub column: String,
    /// The value that gives 1.0.
    pub positive: String,
    /// The value that gives 0.0.
    pub negative: String,
    /// Also accept both values followed by a `.` (as in UCI's Adult test file).
    pub allow_trailing_period: bool,
}

/// The columns a loader uses from a CSV file with a header row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TabularSchema {
    /// The feature columns, in the order their features are laid out.
    pub features: Vec<FeatureColumn>,
    /// The label column.
    pub label: BinaryLabel,
    /// The marker of a missing value (after trimming whitespace), e.g. `?`.
    pub missing: String,
}

/// The values of one parsed cell.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Number(f64),
    Category(Option<String>),
}

/// A CSV file parsed against a schema, not yet encoded.
#[derive(Debug, Clone)]
pub struct TabularTable {
    path: PathBuf,
    /// Row after row, one cell per schema feature.
    cells: Vec<Cell>,
    labels: Vec<f32>,
    feature_count: usize,
}

impl TabularTable {
    /// Number of data rows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no data rows (never true for a table returned by [`read_table`]).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The file the table came from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What an encoding did to cells that did not fit it: all-zero one-hot blocks and clipped numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EncodeCounts {
    /// Categorical cells holding the missing marker (all-zero block).
    pub missing: usize,
    /// Categorical cells holding a category not in the encoder's list (all-zero block).
    pub unknown: usize,
    /// Numeric cells outside their public bounds, clipped to them.
    pub clipped: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum EncodedColumn {
    Scaled(NumericScale),
    Standardised { mean: f64, std: f64 },
    OneHot { categories: Vec<String> },
}

/// How a table encodes into features; see the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct TabularEncoder {
    schema: TabularSchema,
    columns: Vec<EncodedColumn>,
    provenance: Provenance,
}

/// Reads and parses the CSV file at `path` (raw or gzip) against `schema`.
pub fn read_table(path: &Path, schema: &TabularSchema) -> Result<TabularTable> {
    let bytes = source::read_bytes(path)?;
    parse_csv(path, &bytes, schema)
}

/// Parses CSV bytes held in memory (raw or gzip) against `schema`; `path` names them in errors.
pub fn parse_table_bytes(path: &Path, bytes: &[u8], schema: &TabularSchema) -> Result<TabularTable> {
    let bytes = source::decode(path, bytes)?;
    parse_csv(path, &bytes, schema)
}

/// Turns an error of the `csv` crate into a format error at its line.
pub(crate) fn csv_error(path: &Path, err: &csv::Error) -> Error {
    let location = err.position().map_or_else(|| "csv".to_string(), |p| format!("line {}", p.line()));
    let message = match err.kind() {
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("ragged row: {len} fields, but the header has {expected_len}")
        }
        csv::ErrorKind::Utf8 { err, .. } => format!("field {} is not valid UTF-8", err.field() + 1),
        _ => err.to_string(),
    };
    Error::format(path, location, message)
}

/// The index of every named column in `header`; a missing or repeated name is an error on line 1.
pub(crate) fn find_columns(path: &Path, header: &csv::StringRecord, names: &[&str]) -> Result<Vec<usize>> {
    names
        .iter()
        .map(|name| {
            let mut found = header.iter().enumerate().filter(|(_, h)| h == name).map(|(i, _)| i);
            match (found.next(), found.next()) {
                (Some(i), None) => Ok(i),
                (Some(_), Some(_)) => {
                    Err(Error::format(path, "line 1", format!("the header names column '{name}' twice")))
                }
                (None, _) => Err(Error::format(
                    path,
                    "line 1",
                    format!(
                        "the header has no column '{name}' (a header row naming the columns is required; \
                         found: {})",
                        header.iter().collect::<Vec<_>>().join(", ")
                    ),
                )),
            }
        })
        .collect()
}

/// The line number of a record, for error locations.
pub(crate) fn record_line(record: &csv::StringRecord) -> u64 {
    record.position().map_or(0, |p| p.line())
}

fn parse_csv(path: &Path, bytes: &[u8], schema: &TabularSchema) -> Result<TabularTable> {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).trim(csv::Trim::All).from_reader(bytes);
    let header = reader.headers().map_err(|e| csv_error(path, &e))?.clone();
    let mut names: Vec<&str> = schema.features.iter().map(|f| f.name.as_str()).collect();
    names.push(&schema.label.column);
    let indices = find_columns(path, &header, &names)?;
    let (feature_indices, label_index) = indices.split_at(schema.features.len());
    let label_index = label_index[0];

    let mut cells = Vec::new();
    let mut labels = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(csv_error(path, &e)),
        }
        let line = record_line(&record);
        for (column, &index) in schema.features.iter().zip(feature_indices) {
            let value = &record[index];
            let cell = match column.kind {
                ColumnKind::Categorical if value == schema.missing => Cell::Category(None),
                ColumnKind::Categorical => Cell::Category(Some(value.to_string())),
                ColumnKind::Numeric => Cell::Number(parse_number(path, line, &column.name, value, schema)?),
            };
            cells.push(cell);
        }
        labels.push(parse_label(path, line, &record[label_index], &schema.label)?);
    }
    if labels.is_empty() {
        return Err(Error::format(path, "line 2", "no data rows after the header: the dataset is empty"));
    }
    Ok(TabularTable { path: path.to_path_buf(), cells, labels, feature_count: schema.features.len() })
}

fn parse_number(path: &Path, line: u64, column: &str, value: &str, schema: &TabularSchema) -> Result<f64> {
    let location = || format!("line {line}, column '{column}'");
    if value == schema.missing {
        return Err(Error::format(
            path,
            location(),
            format!("missing value '{value}' in a numeric column is not supported"),
        ));
    }
    match value.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        Ok(_) => Err(Error::format(path, location(), format!("'{value}' is not a finite number"))),
        Err(_) => Err(Error::format(path, location(), format!("'{value}' is not a number"))),
    }
}

fn parse_label(path: &Path, line: u64, value: &str, label: &BinaryLabel) -> Result<f32> {
    let stripped = match value.strip_suffix('.') {
        Some(v) if label.allow_trailing_period => v,
        _ => value,
    };
    if stripped == label.positive {
        Ok(1.0)
    } else if stripped == label.negative {
        Ok(0.0)
    } else {
        Err(Error::format(
            path,
            format!("line {line}, column '{}'", label.column),
            format!("label '{value}' is neither '{}' nor '{}'", label.positive, label.negative),
        ))
    }
}

impl TabularEncoder {
    /// The encoder given by public knowledge alone: one [`PublicEncoding`] per schema feature, in
    /// schema order (a [`ColumnKind::Numeric`] column takes [`PublicEncoding::Scaled`], a
    /// [`ColumnKind::Categorical`] one [`PublicEncoding::OneHot`]). No data is read, so the width
    /// and every row's features are independent of the other rows.
    pub fn public(schema: &TabularSchema, encodings: Vec<PublicEncoding>) -> Result<Self> {
        if encodings.len() != schema.features.len() {
            return Err(Error::invalid(
                "schema",
                format!("{} public encodings for {} feature columns", encodings.len(), schema.features.len()),
            ));
        }
        let columns = schema
            .features
            .iter()
            .zip(encodings)
            .map(|(column, encoding)| match (column.kind, encoding) {
                (ColumnKind::Numeric, PublicEncoding::Scaled(scale)) => {
                    scale.check(&column.name)?;
                    Ok(EncodedColumn::Scaled(scale))
                }
                (ColumnKind::Categorical, PublicEncoding::OneHot(categories)) => {
                    check_categories(&column.name, &categories, &schema.missing)?;
                    Ok(EncodedColumn::OneHot { categories })
                }
                (kind, encoding) => Err(Error::invalid(
                    "schema",
                    format!("column '{}' is {kind:?}, but its public encoding is {encoding:?}", column.name),
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(TabularEncoder { schema: schema.clone(), columns, provenance: Provenance::Public })
    }

    /// **Not private.** Fits the encoding to a training table read with the same `schema`: the
    /// categories seen in it (sorted by name) and the mean and population standard deviation of
    /// each numeric column. This reads every private row outside any privacy accounting: one row
    /// can add a category (changing the width) or move a mean (changing every row's features).
    /// Prefer [`TabularEncoder::public`]; the result's [`TabularEncoder::provenance`] is
    /// [`Provenance::FittedToPrivateDataUnaccounted`].
    pub fn fit_to_private_data_unaccounted(schema: &TabularSchema, train: &TabularTable) -> Result<Self> {
        if train.feature_count != schema.features.len() {
            return Err(Error::invalid(
                "schema",
                format!(
                    "{} was read with {} feature columns, the schema has {}",
                    train.path.display(),
                    train.feature_count,
                    schema.features.len()
                ),
            ));
        }
        let rows = train.len();
        let columns = schema
            .features
            .iter()
            .enumerate()
            .map(|(j, column)| {
                let values = train.cells.iter().skip(j).step_by(schema.features.len()).take(rows);
                match column.kind {
                    ColumnKind::Numeric => {
                        let numbers: Vec<f64> = values
                            .map(|c| match c {
                                Cell::Number(x) => *x,
                                Cell::Category(_) => 0.0,
                            })
                            .collect();
                        let mean = numbers.iter().sum::<f64>() / rows as f64;
                        let var = numbers.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / rows as f64;
                        let std = if var > 0.0 && var.is_finite() { var.sqrt() } else { 1.0 };
                        EncodedColumn::Standardised { mean, std }
                    }
                    ColumnKind::Categorical => {
                        let seen: BTreeSet<&str> = values
                            .filter_map(|c| match c {
                                Cell::Category(Some(s)) => Some(s.as_str()),
                                _ => None,
                            })
                            .collect();
                        EncodedColumn::OneHot { categories: seen.into_iter().map(String::from).collect() }
                    }
                }
            })
            .collect();
        Ok(TabularEncoder {
            schema: schema.clone(),
            columns,
            provenance: Provenance::FittedToPrivateDataUnaccounted,
        })
    }

    /// Whether this encoder comes from public knowledge or was fitted to private data.
    pub fn provenance(&self) -> Provenance {
        self.provenance
    }

    /// Number of features one example encodes to.
    pub fn feature_len(&self) -> usize {
        self.columns.iter().map(EncodedColumn::width).sum()
    }

    /// The name of every encoded feature: the column name, or `column=category` for one-hot features.
    pub fn feature_names(&self) -> Vec<String> {
        let mut names = Vec::with_capacity(self.feature_len());
        for (spec, column) in self.schema.features.iter().zip(&self.columns) {
            match column {
                EncodedColumn::Scaled(_) | EncodedColumn::Standardised { .. } => {
                    names.push(spec.name.clone())
                }
                EncodedColumn::OneHot { categories } => {
                    names.extend(categories.iter().map(|c| format!("{}={c}", spec.name)))
                }
            }
        }
        names
    }

    /// The category list of each categorical column, in schema order.
    pub fn categories(&self) -> Vec<(&str, &[String])> {
        self.schema
            .features
            .iter()
            .zip(&self.columns)
            .filter_map(|(spec, column)| match column {
                EncodedColumn::OneHot { categories } => Some((spec.name.as_str(), &categories[..])),
                EncodedColumn::Scaled(_) | EncodedColumn::Standardised { .. } => None,
            })
            .collect()
    }

    /// Encodes `table` into a dataset of `[feature_len]` examples with 0/1 labels.
    pub fn encode(&self, table: &TabularTable) -> Result<(Dataset<f32>, EncodeCounts)> {
        let not_this_schema = || {
            Error::invalid(
                "schema",
                format!("{} was not read with the schema of this encoder", table.path.display()),
            )
        };
        if table.feature_count != self.columns.len() {
            return Err(not_this_schema());
        }
        let width = self.feature_len();
        if width == 0 {
            return Err(Error::format(
                &table.path,
                "header",
                "the schema encodes to zero features (no numeric column and no category listed)",
            ));
        }
        let lookups: Vec<Option<HashMap<&str, usize>>> = self
            .columns
            .iter()
            .map(|c| match c {
                EncodedColumn::OneHot { categories } => {
                    Some(categories.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect())
                }
                EncodedColumn::Scaled(_) | EncodedColumn::Standardised { .. } => None,
            })
            .collect();
        let mut counts = EncodeCounts::default();
        let mut inputs = vec![0f32; table.len() * width];
        for (row, out) in table.cells.chunks_exact(table.feature_count).zip(inputs.chunks_exact_mut(width)) {
            let mut at = 0;
            for ((cell, column), lookup) in row.iter().zip(&self.columns).zip(&lookups) {
                match (cell, column, lookup) {
                    (Cell::Number(x), EncodedColumn::Scaled(scale), _) => {
                        let (value, clipped) = scale.scale(*x);
                        out[at] = value as f32;
                        counts.clipped += usize::from(clipped);
                    }
                    (Cell::Number(x), EncodedColumn::Standardised { mean, std }, _) => {
                        out[at] = ((x - mean) / std) as f32;
                    }
                    (Cell::Category(value), EncodedColumn::OneHot { .. }, Some(lookup)) => {
                        match value.as_deref().map(|v| lookup.get(v)) {
                            None => counts.missing += 1,
                            Some(None) => counts.unknown += 1,
                            Some(Some(&i)) => out[at + i] = 1.0,
                        }
                    }
                    _ => return Err(not_this_schema()),
                }
                at += column.width();
            }
        }
        if let Some(i) = inputs.iter().position(|x| !x.is_finite()) {
            let names = self.feature_names();
            return Err(Error::format(
                &table.path,
                format!("data row {}, feature '{}'", i / width + 1, names[i % width]),
                "the standardised value overflows f32",
            ));
        }
        let dataset = Dataset::new(inputs, table.labels.clone(), vec![width], 1)?;
        Ok((dataset, counts))
    }
}

impl EncodedColumn {
    /// The number of features the column encodes to.
    fn width(&self) -> usize {
        match self {
            EncodedColumn::Scaled(_) | EncodedColumn::Standardised { .. } => 1,
            EncodedColumn::OneHot { categories } => categories.len(),
        }
    }
}

/// A public category list must be non-empty, without repeats, and never hold the missing marker
/// (a `?` row would otherwise get a feature of its own).
fn check_categories(column: &str, categories: &[String], missing: &str) -> Result<()> {
    let invalid = |message: String| Err(Error::invalid("schema", format!("column '{column}': {message}")));
    if categories.is_empty() {
        return invalid("the category list is empty".to_string());
    }
    let mut seen = BTreeSet::new();
    for category in categories {
        if category.is_empty() || category == missing || category.trim() != category {
            return invalid(format!(
                "category '{category}' is empty, the missing marker, or has surrounding whitespace \
                 (cells are trimmed, so it could never match)"
            ));
        }
        if !seen.insert(category.as_str()) {
            return invalid(format!("category '{category}' is listed twice"));
        }
    }
    Ok(())
}
