//! Opening data files: whole-file reads, transparent gunzip, and I/O errors that name the path.
//!
//! Every loader reads its file through [`read_bytes`] (or, for in-memory input such as fuzzing,
//! [`decode`]), so a gzip-compressed copy of any format is accepted wherever the raw one is.

use std::borrow::Cow;
use std::io::Read;
use std::path::Path;

use flate2::read::MultiGzDecoder;

use crate::error::{Error, Result};

/// The first two bytes of every gzip stream (RFC 1952).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Whether `bytes` start like a gzip stream.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&GZIP_MAGIC)
}

/// Reads the whole file at `path`, decompressing it when it starts with the gzip magic bytes.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    match decode(path, &raw)? {
        Cow::Borrowed(_) => Ok(raw),
        Cow::Owned(decompressed) => Ok(decompressed),
    }
}

/// Decompresses `bytes` when they are gzip, else returns them unchanged; `path` names the source in
/// errors. A corrupt or truncated gzip stream is an [`Error::Format`].
pub fn decode<'a>(path: &Path, bytes: &'a [u8]) -> Result<Cow<'a, [u8]>> {
    if !is_gzip(bytes) {
        return Ok(Cow::Borrowed(bytes));
    }
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(4));
    MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .map_err(|e| Error::format(path, "gzip stream", format!("cannot decompress: {e}")))?;
    Ok(Cow::Owned(out))
}

/// The path of a file that may be stored raw or gzip-compressed: `dir/name` if it exists, else
/// `dir/name.gz` if that exists, else an [`Error::Io`] (not found) naming both.
pub fn find_maybe_gz(dir: &Path, name: &str) -> Result<std::path::PathBuf> {
    let raw = dir.join(name);
    if raw.is_file() {
        return Ok(raw);
    }
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    Err(Error::io(
        raw,
        std::io::Error::new(std::io::ErrorKind::NotFound, format!("neither {name} nor {name}.gz exists")),
    ))
}
