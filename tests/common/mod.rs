//! What the command-line tests share: running the `dp` binary and a scratch folder per test.

#![allow(dead_code)] // each test file uses its own part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The shipped data folders.
pub const ADULT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/adult");

/// Runs `dp` with `args` and waits for it.
pub fn dp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dp")).args(args).output().expect("the dp binary runs")
}

/// Bytes as text, for assertions and failure messages.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A path as the `&str` an argument list takes.
pub fn s(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// A folder of its own for one test (named by the test file and the test), removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(file: &str, name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("dp-{file}-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("the temporary folder is writable");
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
