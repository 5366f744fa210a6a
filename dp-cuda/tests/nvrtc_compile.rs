//! Every kernel of the crate compiles through NVRTC for every target architecture. NVRTC needs no
//! GPU; where it cannot be loaded the test says so on stderr and checks nothing, unless
//! `DP_REQUIRE_NVRTC` is set (as `.ci/run` sets it after installing NVRTC), when that is a failure.

use dp_cuda::{nvrtc, source, ARCHITECTURES, KERNEL_FILES};

#[test]
fn every_kernel_compiles_for_sm_80_and_sm_90() {
    if !nvrtc::available() {
        let count = KERNEL_FILES.len() * ARCHITECTURES.len();
        assert!(
            std::env::var_os("DP_REQUIRE_NVRTC").is_none(),
            "DP_REQUIRE_NVRTC is set but {}",
            nvrtc::version().unwrap_err()
        );
        say(&format!("{count} NVRTC compile tests skipped: {}", nvrtc::version().unwrap_err()));
        return;
    }
    let (major, minor) = nvrtc::version().unwrap();
    for file in KERNEL_FILES {
        let name = file.name;
        for arch in ARCHITECTURES {
            let ptx = nvrtc::compile(name, &source(file.text), arch).unwrap_or_else(|e| panic!("{e}"));
            assert!(ptx.contains(&format!(".target {arch}")), "{name} for {arch}: no .target line");
            for kernel in file.entries {
                assert!(ptx.contains(&format!(".entry {kernel}")), "{name} for {arch} lacks {kernel}");
            }
            eprintln!("{name}: {} bytes of PTX for {arch} (NVRTC {major}.{minor})", ptx.len());
        }
    }
}

#[test]
fn a_kernel_that_does_not_compile_is_an_error_with_nvrtcs_log() {
    if !nvrtc::available() {
        say("1 NVRTC error test skipped: libnvrtc not found");
        return;
    }
    let error = nvrtc::compile("broken.cu", "extern \"C\" __global__ void k() { undeclared = 1; }", "sm_90")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("broken.cu does not compile for sm_90") && error.contains("undeclared"),
        "{error}"
    );
}

/// A line on the real stderr: libtest captures `eprintln!` of passing tests, and a skip must be seen.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}
