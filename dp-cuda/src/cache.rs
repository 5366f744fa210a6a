//! An on-disk cache of compiled kernels: the PTX of each kernel file, keyed by its name, the GPU
//! architecture, NVRTC's version and the exact source it was compiled from, so that a process opening
//! a GPU does not compile the same files again.
//!
//! Entries live in `$DP_KERNEL_CACHE` if set, else `$XDG_CACHE_HOME/dp/kernels`, else
//! `$HOME/.cache/dp/kernels`; `DP_KERNEL_CACHE=off` disables it. Each entry is two files: the PTX,
//! and what it was compiled from (NVRTC's options and the source), compared in full before the PTX is
//! used (a hash picks the file
//! name; the comparison, not the hash, decides, so a collision or a stale entry is a miss). Writes go to
//! a temporary file renamed into place. The cache never makes compilation fail: an entry that cannot be
//! read or written is a miss, and the kernels are compiled as without it.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::nvrtc;

/// Where entries are kept, or `None` when the cache is off or no folder is known.
pub fn folder() -> Option<PathBuf> {
    match std::env::var_os("DP_KERNEL_CACHE") {
        Some(v) if v == "off" => None,
        Some(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(|v| PathBuf::from(v).join("dp"))
            .or_else(|| {
                std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|v| PathBuf::from(v).join(".cache/dp"))
            })
            .map(|dp| dp.join("kernels")),
    }
}

/// Whether a call compiled or read the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Compiled,
    Cached,
}

/// The PTX of `source` (file `name`) for `arch`: from the cache in `folder` when an entry holds this
/// exact source, compiled (and stored) otherwise.
pub fn compile(
    folder: Option<&Path>,
    name: &str,
    source: &str,
    arch: &'static str,
) -> Result<(String, Outcome)> {
    let (major, minor) = nvrtc::version()?;
    let Some(folder) = folder else {
        return Ok((nvrtc::compile(name, source, arch)?, Outcome::Compiled));
    };
    let key = entry_name(name, arch, (major, minor), source);
    let (ptx_path, source_path) = (folder.join(format!("{key}.ptx")), folder.join(format!("{key}.cu")));
    if let (Ok(stored), Ok(ptx)) = (std::fs::read_to_string(&source_path), std::fs::read_to_string(&ptx_path))
    {
        if stored == source && !ptx.is_empty() {
            return Ok((ptx, Outcome::Cached));
        }
    }
    let ptx = nvrtc::compile(name, source, arch)?;
    // A failure to store is a miss next time, never an error now.
    let _ = store(folder, &ptx_path, &ptx).and_then(|()| store(folder, &source_path, source));
    Ok((ptx, Outcome::Compiled))
}

/// `name-arch-nvrtcMAJOR.MINOR-HASH`: the hash of the input picks the file; the stored input decides.
fn entry_name(name: &str, arch: &str, (major, minor): (i32, i32), input: &str) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    input.hash(&mut hasher);
    let stem = name.trim_end_matches(".cu");
    format!("{stem}-{arch}-nvrtc{major}.{minor}-{:016x}", hasher.finish())
}

/// Writes `text` to `path` through a temporary file in `folder` renamed into place.
fn store(folder: &Path, path: &Path, text: &str) -> std::io::Result<()> {
    // Unique per process and per write: threads of one process (a distributed run's ranks in tests)
    // may store the same entry at once, and must not write into each other's file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    std::fs::create_dir_all(folder)?;
    let temporary = folder.join(format!(
        ".{}.{}.{}",
        std::process::id(),
        WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        path.file_name().map_or("entry".into(), |n| n.to_string_lossy())
    ));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Threads of one process storing the same entry at once (a distributed run's ranks, each opening
    /// a GPU) each write a temporary file of their own: the entry is always one whole text, never a
    /// file another thread truncated before it was renamed into place.
    #[test]
    fn concurrent_stores_of_one_entry_leave_a_whole_entry() {
        let folder = std::env::temp_dir().join(format!("dp-cache-store-{}", std::process::id()));
        let path = folder.join("entry.ptx");
        let texts: Vec<String> = (0..4).map(|t| format!("{t}").repeat(1 << 18)).collect();
        for _ in 0..20 {
            std::thread::scope(|scope| {
                for text in &texts {
                    let (folder, path) = (&folder, &path);
                    scope.spawn(move || store(folder, path, text).unwrap());
                }
            });
            let stored = std::fs::read_to_string(&path).unwrap();
            assert!(texts.contains(&stored), "a torn entry of {} bytes", stored.len());
        }
        std::fs::remove_dir_all(&folder).unwrap();
    }
}
