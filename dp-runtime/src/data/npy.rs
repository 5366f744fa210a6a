//! NumPy `.npy` arrays (format versions 1, 2 and 3): reading f32, f64, i64, i32, u8 and bool arrays
//! in C order (either byte order), writing any of them (little-endian, version 1 unless the header
//! needs more), and turning input and label arrays into datasets with checks.
//!
//! The reader returns values as stored, NaN included; the dataset conversions reject non-finite
//! inputs, out-of-range labels and token ids, wrong dtypes and mismatched shapes.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::data::{source, Dataset};
use crate::error::{Error, Result};

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// The data of a version-1 file starts at a multiple of this (NumPy's own alignment).
const ALIGN: usize = 64;

/// The elements of an array, in the array's dtype.
#[derive(Debug, Clone, PartialEq)]
pub enum NpyData {
    /// `float32` (`<f4`).
    F32(Vec<f32>),
    /// `float64` (`<f8`).
    F64(Vec<f64>),
    /// `int64` (`<i8`).
    I64(Vec<i64>),
    /// `int32` (`<i4`).
    I32(Vec<i32>),
    /// `uint8` (`|u1`).
    U8(Vec<u8>),
    /// `bool` (`|b1`, bytes 0 and 1).
    Bool(Vec<bool>),
}

impl NpyData {
    /// NumPy's name of the dtype (`float32`, `int64`, ...).
    pub fn dtype_name(&self) -> &'static str {
        match self {
            NpyData::F32(_) => "float32",
            NpyData::F64(_) => "float64",
            NpyData::I64(_) => "int64",
            NpyData::I32(_) => "int32",
            NpyData::U8(_) => "uint8",
            NpyData::Bool(_) => "bool",
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            NpyData::F32(v) => v.len(),
            NpyData::F64(v) => v.len(),
            NpyData::I64(v) => v.len(),
            NpyData::I32(v) => v.len(),
            NpyData::U8(v) => v.len(),
            NpyData::Bool(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The little-endian descr written to a header.
    fn descr(&self) -> &'static str {
        match self {
            NpyData::F32(_) => "<f4",
            NpyData::F64(_) => "<f8",
            NpyData::I64(_) => "<i8",
            NpyData::I32(_) => "<i4",
            NpyData::U8(_) => "|u1",
            NpyData::Bool(_) => "|b1",
        }
    }

    fn write_le(&self, out: &mut Vec<u8>) {
        match self {
            NpyData::F32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            NpyData::F64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            NpyData::I64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            NpyData::I32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            NpyData::U8(v) => out.extend_from_slice(v),
            NpyData::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        }
    }
}

/// An n-dimensional array in C order; `shape` is empty for a scalar.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// The size of each dimension, outermost first.
    pub shape: Vec<usize>,
    /// The elements in C order, as many as the product of `shape`.
    pub data: NpyData,
}

impl NpyArray {
    /// An array of `shape`; the number of elements must be the product of `shape`.
    pub fn new(shape: Vec<usize>, data: NpyData) -> Result<Self> {
        let count = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        if count != Some(data.len()) {
            return Err(Error::invalid(
                "npy array",
                format!("shape {shape:?} does not hold {} elements", data.len()),
            ));
        }
        Ok(NpyArray { shape, data })
    }

    /// The file's bytes (header and little-endian data).
    pub fn to_bytes(&self) -> Vec<u8> {
        let shape = match self.shape[..] {
            [] => "()".to_string(),
            [n] => format!("({n},)"),
            _ => format!("({})", self.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
        };
        let mut header =
            format!("{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}", self.data.descr());
        // Version 1 stores the header length in 2 bytes; longer headers need version 2 (4 bytes).
        let version: u8 = if header.len() + 1 + 10 + ALIGN <= usize::from(u16::MAX) { 1 } else { 2 };
        let prefix = if version == 1 { 10 } else { 12 };
        let padded = (prefix + header.len() + 1).div_ceil(ALIGN) * ALIGN;
        header.extend(std::iter::repeat_n(' ', padded - prefix - header.len() - 1));
        header.push('\n');
        let mut out = Vec::with_capacity(padded + self.data.len() * 8);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[version, 0]);
        if version == 1 {
            out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(header.as_bytes());
        self.data.write_le(&mut out);
        out
    }
}

/// Reads the `.npy` file at `path`.
pub fn read(path: &Path) -> Result<NpyArray> {
    let bytes = source::read_bytes(path)?;
    parse(path, &bytes)
}

/// Parses `.npy` bytes held in memory; `path` names them in errors.
pub fn parse_bytes(path: &Path, bytes: &[u8]) -> Result<NpyArray> {
    let bytes = source::decode(path, bytes)?;
    parse(path, &bytes)
}

/// Writes `array` to `path` through a temporary file in the same folder, renamed into place, so a
/// failed write leaves no partial file behind.
pub fn write(path: &Path, array: &NpyArray) -> Result<()> {
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp: PathBuf = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = File::create(&temp)
        .and_then(|mut f| f.write_all(&array.to_bytes()).and_then(|()| f.sync_all()))
        .map_err(|e| Error::io(&temp, e))
        .and_then(|()| std::fs::rename(&temp, path).map_err(|e| Error::io(path, e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// Writes an `f32` array of `shape` to `path`.
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    write(path, &NpyArray::new(shape.to_vec(), NpyData::F32(data.to_vec()))?)
}

/// Writes an `i64` array of `shape` to `path`.
pub fn write_i64(path: &Path, shape: &[usize], data: &[i64]) -> Result<()> {
    write(path, &NpyArray::new(shape.to_vec(), NpyData::I64(data.to_vec()))?)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dtype {
    F32,
    F64,
    I64,
    I32,
    U8,
    Bool,
}

impl Dtype {
    fn size(self) -> usize {
        match self {
            Dtype::F64 | Dtype::I64 => 8,
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::U8 | Dtype::Bool => 1,
        }
    }
}

fn parse(path: &Path, bytes: &[u8]) -> Result<NpyArray> {
    if !bytes.starts_with(MAGIC) {
        let shown = &bytes[..bytes.len().min(6)];
        return Err(Error::format(
            path,
            "byte 0",
            format!("wrong magic number {shown:02x?}: a .npy file starts with \\x93NUMPY"),
        ));
    }
    if bytes.len() < 10 {
        return Err(Error::format(path, format!("byte {}", bytes.len()), "truncated header"));
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let header_start = match major {
        1 => 10,
        2 | 3 => 12,
        _ => {
            return Err(Error::format(
                path,
                "byte 6",
                format!("unsupported format version {major}.{minor} (1, 2 and 3 are read)"),
            ))
        }
    };
    if bytes.len() < header_start {
        return Err(Error::format(path, format!("byte {}", bytes.len()), "truncated header"));
    }
    let header_len = if major == 1 {
        usize::from(u16::from_le_bytes([bytes[8], bytes[9]]))
    } else {
        u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize
    };
    let data_start =
        header_start.checked_add(header_len).filter(|&end| end <= bytes.len()).ok_or_else(|| {
            Error::format(
                path,
                format!("byte {}", bytes.len()),
                format!(
                    "truncated header: {header_len} header bytes announced, the file has {}",
                    bytes.len()
                ),
            )
        })?;
    let header = std::str::from_utf8(&bytes[header_start..data_start]).map_err(|e| {
        Error::format(path, format!("byte {}", header_start + e.valid_up_to()), "header is not text")
    })?;
    let fields = parse_header(header).map_err(|message| Error::format(path, "header", message))?;
    let (dtype, big_endian) =
        parse_descr(&fields.descr).map_err(|m| Error::format(path, "header 'descr'", m))?;
    if fields.fortran_order {
        return Err(Error::format(
            path,
            "header 'fortran_order'",
            "fortran_order = True is not supported: save a C-order array (numpy.ascontiguousarray)",
        ));
    }
    let shape = fields.shape;
    let expected = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .and_then(|count| count.checked_mul(dtype.size()))
        .ok_or_else(|| {
            Error::format(path, "header 'shape'", format!("shape {shape:?} overflows the addressable size"))
        })?;
    let body = &bytes[data_start..];
    if body.len() < expected {
        return Err(Error::format(
            path,
            format!("byte {}", bytes.len()),
            format!(
                "truncated data: shape {shape:?} of {}-byte elements needs {expected} bytes after the header, \
                 the file has {}",
                dtype.size(),
                body.len()
            ),
        ));
    }
    if body.len() > expected {
        return Err(Error::format(
            path,
            format!("byte {}", data_start + expected),
            format!("{} unexpected bytes after the data", body.len() - expected),
        ));
    }
    let data = decode_data(path, data_start, body, dtype, big_endian)?;
    Ok(NpyArray { shape, data })
}

fn decode_data(path: &Path, start: usize, body: &[u8], dtype: Dtype, big_endian: bool) -> Result<NpyData> {
    fn words<const N: usize>(body: &[u8], big_endian: bool) -> impl Iterator<Item = [u8; N]> + '_ {
        body.chunks_exact(N).map(move |c| {
            let mut word = [0u8; N];
            word.copy_from_slice(c);
            if big_endian {
                word.reverse();
            }
            word
        })
    }
    Ok(match dtype {
        Dtype::F32 => NpyData::F32(words::<4>(body, big_endian).map(f32::from_le_bytes).collect()),
        Dtype::F64 => NpyData::F64(words::<8>(body, big_endian).map(f64::from_le_bytes).collect()),
        Dtype::I64 => NpyData::I64(words::<8>(body, big_endian).map(i64::from_le_bytes).collect()),
        Dtype::I32 => NpyData::I32(words::<4>(body, big_endian).map(i32::from_le_bytes).collect()),
        Dtype::U8 => NpyData::U8(body.to_vec()),
        Dtype::Bool => {
            if let Some(i) = body.iter().position(|&b| b > 1) {
                return Err(Error::format(
                    path,
                    format!("byte {}", start + i),
                    format!("boolean element {i} is {}, neither 0 nor 1", body[i]),
                ));
            }
            NpyData::Bool(body.iter().map(|&b| b == 1).collect())
        }
    })
}

/// The three entries of a header dictionary.
struct HeaderFields {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// A value of the Python literal subset that headers use.
enum Literal {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
}

/// Parses `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }` (any key order, optional
/// trailing comma, whitespace anywhere).
fn parse_header(header: &str) -> std::result::Result<HeaderFields, String> {
    let mut p = LiteralParser { rest: header.trim_end_matches(['\n', ' ', '\0']) };
    p.expect('{')?;
    let (mut descr, mut fortran_order, mut shape) = (None, None, None);
    loop {
        if p.eat('}') {
            break;
        }
        let key = match p.value()? {
            Literal::Str(s) => s,
            _ => return Err("header keys must be strings".to_string()),
        };
        p.expect(':')?;
        let value = p.value()?;
        match (key.as_str(), value) {
            ("descr", Literal::Str(s)) if descr.is_none() => descr = Some(s),
            ("fortran_order", Literal::Bool(b)) if fortran_order.is_none() => fortran_order = Some(b),
            ("shape", Literal::Tuple(t)) if shape.is_none() => shape = Some(t),
            ("descr" | "fortran_order" | "shape", _) => {
                return Err(format!(
                    "'{key}' is repeated or has the wrong kind of value (structured dtypes \
                                    are not supported)"
                ))
            }
            _ => return Err(format!("unexpected key '{key}'")),
        }
        if !p.eat(',') {
            p.expect('}')?;
            break;
        }
    }
    if !p.rest.trim().is_empty() {
        return Err("text after the closing brace".to_string());
    }
    match (descr, fortran_order, shape) {
        (Some(descr), Some(fortran_order), Some(shape)) => Ok(HeaderFields { descr, fortran_order, shape }),
        _ => Err("the header needs 'descr', 'fortran_order' and 'shape'".to_string()),
    }
}

struct LiteralParser<'a> {
    rest: &'a str,
}

impl LiteralParser<'_> {
    fn skip_space(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_space();
        match self.rest.strip_prefix(c) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, c: char) -> std::result::Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected '{c}' at '{}'", self.rest.chars().take(20).collect::<String>()))
        }
    }

    fn value(&mut self) -> std::result::Result<Literal, String> {
        self.skip_space();
        if let Some(rest) = self.rest.strip_prefix("True") {
            self.rest = rest;
            return Ok(Literal::Bool(true));
        }
        if let Some(rest) = self.rest.strip_prefix("False") {
            self.rest = rest;
            return Ok(Literal::Bool(false));
        }
        match self.rest.chars().next() {
            Some(quote @ ('\'' | '"')) => {
                let body = &self.rest[1..];
                let end = body.find(quote).ok_or("unterminated string")?;
                self.rest = &body[end + 1..];
                Ok(Literal::Str(body[..end].to_string()))
            }
            Some('(') => {
                self.rest = &self.rest[1..];
                let mut dims = Vec::new();
                loop {
                    if self.eat(')') {
                        return Ok(Literal::Tuple(dims));
                    }
                    dims.push(self.dimension()?);
                    if !self.eat(',') {
                        self.expect(')')?;
                        return Ok(Literal::Tuple(dims));
                    }
                }
            }
            _ => Err(format!("unexpected value at '{}'", self.rest.chars().take(20).collect::<String>())),
        }
    }

    fn dimension(&mut self) -> std::result::Result<usize, String> {
        self.skip_space();
        let digits = self.rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "expected a dimension at '{}'",
                self.rest.chars().take(20).collect::<String>()
            ));
        }
        let (number, rest) = self.rest.split_at(digits);
        self.rest = rest;
        number.parse().map_err(|_| format!("dimension {number} is too large"))
    }
}

/// The dtype and byte order (`true` for big-endian) of a descr such as `<f4`.
fn parse_descr(descr: &str) -> std::result::Result<(Dtype, bool), String> {
    let unsupported =
        || format!("unsupported dtype '{descr}' (supported: float32, float64, int64, int32, uint8, bool)");
    let (order, code) = match descr.chars().next() {
        Some(c @ ('<' | '>' | '|' | '=')) => (c, &descr[1..]),
        _ => ('=', descr),
    };
    let dtype = match code {
        "f4" => Dtype::F32,
        "f8" => Dtype::F64,
        "i8" => Dtype::I64,
        "i4" => Dtype::I32,
        "u1" => Dtype::U8,
        "b1" => Dtype::Bool,
        _ => return Err(unsupported()),
    };
    // `=` is the writer's native order; every platform this crate targets is little-endian.
    Ok((dtype, order == '>' && dtype.size() > 1))
}

/// What a label array must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelKind {
    /// Class indices in `0..classes`, an integer array (int64, int32 or uint8) of shape `[N]`.
    Classes(usize),
    /// 0/1 targets, a float or integer array of shape `[N]` whose values are exactly 0 or 1.
    Binary,
}

/// Labels of shape `[N]` as `f32`, checked against `kind`.
pub fn labels(array: &NpyArray, path: &Path, kind: LabelKind) -> Result<Vec<f32>> {
    if array.shape.len() != 1 {
        return Err(Error::format(
            path,
            "header 'shape'",
            format!("labels need shape [N], found {:?}", array.shape),
        ));
    }
    if array.data.is_empty() {
        return Err(Error::format(path, "header 'shape'", "no labels: the dataset is empty"));
    }
    let values: Vec<f64> = match (&array.data, kind) {
        (NpyData::I64(v), _) => v.iter().map(|&x| x as f64).collect(),
        (NpyData::I32(v), _) => v.iter().map(|&x| f64::from(x)).collect(),
        (NpyData::U8(v), _) => v.iter().map(|&x| f64::from(x)).collect(),
        (NpyData::F32(v), LabelKind::Binary) => v.iter().map(|&x| f64::from(x)).collect(),
        (NpyData::F64(v), LabelKind::Binary) => v.clone(),
        (data, LabelKind::Classes(_)) => {
            return Err(Error::format(
                path,
                "header 'descr'",
                format!("class labels must be integers (int64, int32 or uint8), found {}", data.dtype_name()),
            ))
        }
        (data, LabelKind::Binary) => {
            return Err(Error::format(
                path,
                "header 'descr'",
                format!("0/1 labels must be float32, float64 or integers, found {}", data.dtype_name()),
            ))
        }
    };
    let in_range = |x: f64| match kind {
        LabelKind::Classes(classes) => x >= 0.0 && x < classes as f64,
        LabelKind::Binary => x == 0.0 || x == 1.0,
    };
    if let Some(i) = values.iter().position(|&x| !in_range(x)) {
        let expected = match kind {
            LabelKind::Classes(classes) => format!("a class in 0..{classes}"),
            LabelKind::Binary => "0 or 1".to_string(),
        };
        return Err(Error::format(
            path,
            format!("element {i}"),
            format!("label {} is out of range: expected {expected}", values[i]),
        ));
    }
    Ok(values.iter().map(|&x| x as f32).collect())
}

fn check_examples(array: &NpyArray, path: &Path, example_shape: &[usize]) -> Result<usize> {
    let matches = array.shape.len() == example_shape.len() + 1 && array.shape[1..] == *example_shape;
    if !matches {
        return Err(Error::format(
            path,
            "header 'shape'",
            format!("shape {:?} does not match [N, {}]", array.shape, dims_list(example_shape)),
        ));
    }
    if array.shape[0] == 0 {
        return Err(Error::format(path, "header 'shape'", "no examples: the dataset is empty"));
    }
    Ok(array.shape[0])
}

fn dims_list(dims: &[usize]) -> String {
    dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
}

fn check_count(inputs_path: &Path, n: usize, labels_path: &Path, label_count: usize) -> Result<()> {
    if n != label_count {
        return Err(Error::format(
            labels_path,
            "header 'shape'",
            format!("{label_count} labels but {n} examples in {}", inputs_path.display()),
        ));
    }
    Ok(())
}

/// A dense dataset from inputs of shape `[N, example_shape...]` (float32, or float64 converted;
/// every value finite) and labels of shape `[N]`.
pub fn dense_dataset(
    inputs: &NpyArray,
    inputs_path: &Path,
    labels_array: &NpyArray,
    labels_path: &Path,
    example_shape: &[usize],
    kind: LabelKind,
) -> Result<Dataset<f32>> {
    let n = check_examples(inputs, inputs_path, example_shape)?;
    let values: Vec<f32> = match &inputs.data {
        NpyData::F32(v) => v.clone(),
        NpyData::F64(v) => v.iter().map(|&x| x as f32).collect(),
        data => {
            return Err(Error::format(
                inputs_path,
                "header 'descr'",
                format!("dense inputs must be float32 or float64, found {}", data.dtype_name()),
            ))
        }
    };
    if let Some(i) = values.iter().position(|x| !x.is_finite()) {
        return Err(Error::format(
            inputs_path,
            format!("element {i}"),
            format!("input value {} is not finite (example {})", values[i], i / (values.len() / n)),
        ));
    }
    let label_values = labels(labels_array, labels_path, kind)?;
    check_count(inputs_path, n, labels_path, label_values.len())?;
    Dataset::new(values, label_values, example_shape.to_vec(), 1)
}

/// A token dataset from ids of shape `[N, seq_len]` (int64 or int32, each in `0..vocab`) and labels
/// of shape `[N]`.
pub fn token_dataset(
    inputs: &NpyArray,
    inputs_path: &Path,
    labels_array: &NpyArray,
    labels_path: &Path,
    seq_len: usize,
    vocab: usize,
    kind: LabelKind,
) -> Result<Dataset<u32>> {
    let n = check_examples(inputs, inputs_path, &[seq_len])?;
    let ids: Vec<i64> = match &inputs.data {
        NpyData::I64(v) => v.clone(),
        NpyData::I32(v) => v.iter().map(|&x| i64::from(x)).collect(),
        data => {
            return Err(Error::format(
                inputs_path,
                "header 'descr'",
                format!("token ids must be int64 or int32, found {}", data.dtype_name()),
            ))
        }
    };
    if let Some(i) = ids.iter().position(|&t| t < 0 || t as u64 >= vocab as u64) {
        return Err(Error::format(
            inputs_path,
            format!("element {i}"),
            format!("token id {} of example {} is out of range 0..{vocab}", ids[i], i / seq_len),
        ));
    }
    let label_values = labels(labels_array, labels_path, kind)?;
    check_count(inputs_path, n, labels_path, label_values.len())?;
    Dataset::new(ids.iter().map(|&t| t as u32).collect(), label_values, vec![seq_len], 1)
}
