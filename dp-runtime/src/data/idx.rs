//! The IDX format of the MNIST family: a generic reader for every element type, and the image and
//! label views that the MNIST-style loaders use.
//!
//! Layout (big-endian): two zero bytes, a type code (0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32,
//! 0x0E f64), the number of dimensions, one u32 per dimension, then the elements in C order.

use std::path::Path;

use crate::data::source;
use crate::error::{Error, Result};

/// The elements of an IDX file, in the file's own type.
#[derive(Debug, Clone, PartialEq)]
pub enum IdxData {
    /// Type 0x08.
    U8(Vec<u8>),
    /// Type 0x09.
    I8(Vec<i8>),
    /// Type 0x0B.
    I16(Vec<i16>),
    /// Type 0x0C.
    I32(Vec<i32>),
    /// Type 0x0D.
    F32(Vec<f32>),
    /// Type 0x0E.
    F64(Vec<f64>),
}

impl IdxData {
    /// The element type's name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            IdxData::U8(_) => "u8",
            IdxData::I8(_) => "i8",
            IdxData::I16(_) => "i16",
            IdxData::I32(_) => "i32",
            IdxData::F32(_) => "f32",
            IdxData::F64(_) => "f64",
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            IdxData::U8(v) => v.len(),
            IdxData::I8(v) => v.len(),
            IdxData::I16(v) => v.len(),
            IdxData::I32(v) => v.len(),
            IdxData::F32(v) => v.len(),
            IdxData::F64(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A whole IDX file: its dimensions and its elements (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    /// The size of each dimension, outermost first.
    pub dims: Vec<usize>,
    /// The elements, as many as the product of `dims`.
    pub data: IdxData,
}

/// Images of an IDX file of shape `[count, rows, cols]`, as `f32` in `[0, 1]` (pixel / 255).
#[derive(Debug, Clone, PartialEq)]
pub struct IdxImages {
    /// `count × rows × cols` values in `[0, 1]`, image after image, row-major.
    pub pixels: Vec<f32>,
    /// Number of images.
    pub count: usize,
    /// Pixel rows per image.
    pub rows: usize,
    /// Pixel columns per image.
    pub cols: usize,
}

#[derive(Clone, Copy)]
enum ElemType {
    U8,
    I8,
    I16,
    I32,
    F32,
    F64,
}

impl ElemType {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0x08 => ElemType::U8,
            0x09 => ElemType::I8,
            0x0B => ElemType::I16,
            0x0C => ElemType::I32,
            0x0D => ElemType::F32,
            0x0E => ElemType::F64,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            ElemType::U8 | ElemType::I8 => 1,
            ElemType::I16 => 2,
            ElemType::I32 | ElemType::F32 => 4,
            ElemType::F64 => 8,
        }
    }
}

/// Reads an IDX file (raw or gzip) at `path`.
pub fn read(path: &Path) -> Result<IdxArray> {
    let bytes = source::read_bytes(path)?;
    parse(path, &bytes)
}

/// Parses IDX `bytes` (raw or gzip) held in memory; `path` names them in errors.
pub fn parse_bytes(path: &Path, bytes: &[u8]) -> Result<IdxArray> {
    let bytes = source::decode(path, bytes)?;
    parse(path, &bytes)
}

fn parse(path: &Path, bytes: &[u8]) -> Result<IdxArray> {
    if bytes.len() < 4 {
        return Err(Error::format(
            path,
            "byte 0",
            format!("truncated: {} bytes, but an IDX header needs at least 4", bytes.len()),
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(Error::format(
            path,
            "byte 0",
            format!(
                "wrong magic number 0x{:02x}{:02x}{:02x}{:02x}: an IDX file starts with two zero bytes",
                bytes[0], bytes[1], bytes[2], bytes[3]
            ),
        ));
    }
    let elem = ElemType::from_code(bytes[2]).ok_or_else(|| {
        Error::format(
            path,
            "byte 2",
            format!(
                "wrong magic number: unknown IDX element type 0x{:02x} (expected 0x08, 0x09, 0x0b, 0x0c, \
                 0x0d or 0x0e)",
                bytes[2]
            ),
        )
    })?;
    let ndims = usize::from(bytes[3]);
    if ndims == 0 {
        return Err(Error::format(path, "byte 3", "an IDX file needs at least one dimension"));
    }
    let header_len = 4 + 4 * ndims;
    if bytes.len() < header_len {
        return Err(Error::format(
            path,
            format!("byte {}", bytes.len()),
            format!(
                "truncated header: {ndims} dimensions need {header_len} bytes, the file has {}",
                bytes.len()
            ),
        ));
    }
    let dims: Vec<usize> = bytes[4..header_len]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .and_then(|count| count.checked_mul(elem.size()))
        .and_then(|data_len| data_len.checked_add(header_len))
        .ok_or_else(|| {
            Error::format(path, "byte 4", format!("dimensions {dims:?} overflow the addressable size"))
        })?;
    if bytes.len() < expected {
        return Err(Error::format(
            path,
            format!("byte {}", bytes.len()),
            format!(
                "truncated: dimensions {dims:?} of {}-byte elements need {expected} bytes, the file has {}",
                elem.size(),
                bytes.len()
            ),
        ));
    }
    if bytes.len() > expected {
        return Err(Error::format(
            path,
            format!("byte {expected}"),
            format!("{} unexpected bytes after the last element", bytes.len() - expected),
        ));
    }
    let body = &bytes[header_len..];
    let data = match elem {
        ElemType::U8 => IdxData::U8(body.to_vec()),
        ElemType::I8 => IdxData::I8(body.iter().map(|&b| b as i8).collect()),
        ElemType::I16 => {
            IdxData::I16(body.chunks_exact(2).map(|c| i16::from_be_bytes([c[0], c[1]])).collect())
        }
        ElemType::I32 => {
            IdxData::I32(body.chunks_exact(4).map(|c| i32::from_be_bytes([c[0], c[1], c[2], c[3]])).collect())
        }
        ElemType::F32 => {
            let v: Vec<f32> =
                body.chunks_exact(4).map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]])).collect();
            check_finite(path, header_len, 4, v.iter().map(|&x| f64::from(x)))?;
            IdxData::F32(v)
        }
        ElemType::F64 => {
            let v: Vec<f64> = body
                .chunks_exact(8)
                .map(|c| f64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect();
            check_finite(path, header_len, 8, v.iter().copied())?;
            IdxData::F64(v)
        }
    };
    Ok(IdxArray { dims, data })
}

/// Data loaders never hand on NaN or infinity: the first one found is an error at its byte offset.
fn check_finite(path: &Path, start: usize, size: usize, values: impl Iterator<Item = f64>) -> Result<()> {
    for (i, x) in values.enumerate() {
        if !x.is_finite() {
            return Err(Error::format(
                path,
                format!("byte {}", start + i * size),
                format!("element {i} is {x}, not a finite number"),
            ));
        }
    }
    Ok(())
}

/// Reads an IDX image file (u8, `[count, rows, cols]`, at least one image) as `f32` in `[0, 1]`.
pub fn read_images(path: &Path) -> Result<IdxImages> {
    images_from(path, read(path)?)
}

/// [`read_images`] on bytes held in memory.
pub fn parse_images_bytes(path: &Path, bytes: &[u8]) -> Result<IdxImages> {
    images_from(path, parse_bytes(path, bytes)?)
}

fn images_from(path: &Path, array: IdxArray) -> Result<IdxImages> {
    let IdxData::U8(raw) = array.data else {
        return Err(Error::format(
            path,
            "byte 2",
            format!("images must be u8 (type 0x08), found {}", array.data.type_name()),
        ));
    };
    let [count, rows, cols] = array.dims[..] else {
        return Err(Error::format(
            path,
            "byte 3",
            format!("images need 3 dimensions [count, rows, cols], found {:?}", array.dims),
        ));
    };
    if raw.is_empty() {
        return Err(Error::format(path, "byte 4", format!("no images: dimensions {:?}", array.dims)));
    }
    let pixels = raw.iter().map(|&p| f32::from(p) / 255.0).collect();
    Ok(IdxImages { pixels, count, rows, cols })
}

/// Reads an IDX label file (u8, one dimension, at least one label) as class indices stored as `f32`;
/// every label must be below `classes`.
pub fn read_labels(path: &Path, classes: usize) -> Result<Vec<f32>> {
    labels_from(path, read(path)?, classes)
}

/// [`read_labels`] on bytes held in memory.
pub fn parse_labels_bytes(path: &Path, bytes: &[u8], classes: usize) -> Result<Vec<f32>> {
    labels_from(path, parse_bytes(path, bytes)?, classes)
}

fn labels_from(path: &Path, array: IdxArray, classes: usize) -> Result<Vec<f32>> {
    let IdxData::U8(raw) = array.data else {
        return Err(Error::format(
            path,
            "byte 2",
            format!("labels must be u8 (type 0x08), found {}", array.data.type_name()),
        ));
    };
    if array.dims.len() != 1 {
        return Err(Error::format(
            path,
            "byte 3",
            format!("labels need 1 dimension, found {:?}", array.dims),
        ));
    }
    if raw.is_empty() {
        return Err(Error::format(path, "byte 4", "no labels: the dimension is 0"));
    }
    // Header of a one-dimensional file: 4 bytes of magic plus one u32.
    const LABELS_START: usize = 8;
    if let Some(i) = raw.iter().position(|&l| usize::from(l) >= classes) {
        return Err(Error::format(
            path,
            format!("byte {}", LABELS_START + i),
            format!("label {} of example {i} is out of range 0..{classes}", raw[i]),
        ));
    }
    Ok(raw.iter().map(|&l| f32::from(l)).collect())
}
