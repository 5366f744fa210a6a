//! The emulated device's global state: its memory, the handles the API gives out, and the sticky
//! error a failed kernel leaves (after which, as on a GPU, every call fails).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use crate::memory::Memory;

static MEMORY: LazyLock<Mutex<Memory>> = LazyLock::new(Default::default);
static FAILED: AtomicBool = AtomicBool::new(false);
static FAILURE: Mutex<Option<String>> = Mutex::new(None);
static NEXT_HANDLE: AtomicUsize = AtomicUsize::new(0x1000);

/// The device's memory.
pub fn memory() -> MutexGuard<'static, Memory> {
    MEMORY.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fresh handle (never 0, never reused).
pub fn handle() -> usize {
    NEXT_HANDLE.fetch_add(16, Ordering::Relaxed)
}

/// A line on the process's stderr, past a test harness's capture of the calling thread's output: a
/// refusal or a failure must be seen even when the test that met it passes.
pub fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "dp-cuda-emulator: {line}");
}

/// Records the first failure of work on a stream, and says it on stderr: every later call fails.
pub fn fail(why: String) {
    say(&why);
    FAILURE.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(why);
    FAILED.store(true, Ordering::SeqCst);
}

/// Whether work on a stream has failed.
pub fn failed() -> bool {
    FAILED.load(Ordering::SeqCst)
}

/// Which streams run late (`DP_EMULATOR_LATE_STREAMS`; crate::stream).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Late {
    /// Every stream runs as soon as its events allow (the default).
    None,
    /// `later`: a stream runs an operation only when every stream made before it has nothing to
    /// run, so a landing or branch stream's work comes as late as the events allow.
    Later,
    /// `earlier`: a stream runs an operation only when every stream made after it has nothing to
    /// run, so the GPU's own stream comes late against its landing and branch streams.
    Earlier,
}

/// The late schedule asked for (`DP_EMULATOR_LATE_STREAMS=later|earlier`).
pub fn late_streams() -> Late {
    static LATE: LazyLock<Late> =
        LazyLock::new(|| match std::env::var("DP_EMULATOR_LATE_STREAMS").as_deref() {
            Ok("later") => Late::Later,
            Ok("earlier") => Late::Earlier,
            Ok("") | Err(std::env::VarError::NotPresent) => Late::None,
            Ok(other) => {
                // A misspelt schedule must not quietly test the default one.
                say(&format!("DP_EMULATOR_LATE_STREAMS={other:?}: the schedules are `later` and `earlier`"));
                std::process::exit(2)
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                say("DP_EMULATOR_LATE_STREAMS is not UTF-8: the schedules are `later` and `earlier`");
                std::process::exit(2)
            }
        });
    *LATE
}

/// Objects by handle.
pub struct Handles<T>(LazyLock<Mutex<HashMap<usize, Arc<T>>>>);

impl<T> Handles<T> {
    /// An empty table.
    pub const fn new() -> Self {
        Handles(LazyLock::new(Default::default))
    }

    fn map(&self) -> MutexGuard<'_, HashMap<usize, Arc<T>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `value` under a fresh handle.
    pub fn insert(&self, value: Arc<T>) -> usize {
        let h = handle();
        self.map().insert(h, value);
        h
    }

    /// Adds `value` under `h`.
    pub fn insert_at(&self, h: usize, value: Arc<T>) {
        self.map().insert(h, value);
    }

    /// The object of handle `h`.
    pub fn get(&self, h: usize) -> Option<Arc<T>> {
        self.map().get(&h).cloned()
    }

    /// Removes handle `h`.
    pub fn remove(&self, h: usize) -> Option<Arc<T>> {
        self.map().remove(&h)
    }

    /// Every object.
    pub fn all(&self) -> Vec<Arc<T>> {
        self.map().values().cloned().collect()
    }
}

impl<T> Default for Handles<T> {
    fn default() -> Self {
        Self::new()
    }
}
