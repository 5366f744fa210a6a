//! What the GPU program tests share: finding the device, and saying visibly when there is none.

#![allow(dead_code)] // each test file uses its own part

use dp::cuda::device::{self, Gpu};

/// A line on the real stderr: libtest captures `eprintln!` of passing tests, and a skip must be seen.
pub fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// GPU 0, or `None` after saying that `test` was skipped (a failure under `DP_REQUIRE_GPU`).
pub fn gpu(test: &str) -> Option<Gpu> {
    if device::device_count() == 0 {
        assert!(
            std::env::var_os("DP_REQUIRE_GPU").is_none(),
            "DP_REQUIRE_GPU is set but no CUDA device is present"
        );
        say(&format!("1 GPU test skipped: no CUDA device ({test})"));
        return None;
    }
    let gpu = Gpu::open(0).unwrap_or_else(|e| panic!("{e}"));
    say(&format!("{test}: on {}", gpu.describe()));
    Some(gpu)
}
