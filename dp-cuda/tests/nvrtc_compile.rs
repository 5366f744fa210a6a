//! Every kernel of the crate compiles through NVRTC for every target architecture. NVRTC needs no
//! GPU; where it cannot be loaded the test says so on stderr and checks nothing, unless
//! `DP_REQUIRE_NVRTC` is set (as `.ci/run` sets it after installing NVRTC), when that is a failure.

use dp_cuda::cache::{self, Outcome};
use dp_cuda::{clip, nvrtc, source, ARCHITECTURES, KERNEL_FILES};

/// (file, kernel, threads per block) of the kernels launched with launch bounds.
const BOUNDED: [(&str, &str, u32); 3] = [
    ("conv.cu", "dp_kept_sq_norms", dp_cuda::conv::KEPT_NORM_THREADS),
    ("lstm.cu", "dp_lstm_forward_fused", dp_cuda::lstm::LSTM_BLOCK_THREADS),
    ("lstm.cu", "dp_lstm_backward_fused", dp_cuda::lstm::LSTM_BLOCK_THREADS),
];

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
            // The kernels launched with more threads than a block's default: the PTX bounds each entry
            // to them, so the driver's compiler keeps it within their registers.
            for &(_, kernel, threads) in BOUNDED.iter().filter(|(file, ..)| *file == name) {
                let entry = ptx.split(&format!(".entry {kernel}")).nth(1).expect("the entry, checked above");
                let header = &entry[..entry.find('{').expect("an entry's body")];
                let bound = format!(".maxntid {threads}, 1, 1");
                assert!(header.contains(&bound), "{arch}: {kernel} lacks {bound}: {header}");
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

/// The kernel cache returns what NVRTC compiles, and only for the exact input it was compiled from:
/// a changed source, or an entry whose stored input was altered, compiles again; no folder, no cache.
#[test]
fn the_kernel_cache_returns_the_compiled_ptx_for_the_same_source_only() {
    if !nvrtc::available() {
        assert!(
            std::env::var_os("DP_REQUIRE_NVRTC").is_none(),
            "DP_REQUIRE_NVRTC is set but NVRTC is missing"
        );
        say("1 kernel cache test skipped: libnvrtc not found");
        return;
    }
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kernel-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let text = source(clip::SOURCE);
    let timed = |text: &str| {
        let start = std::time::Instant::now();
        let out = cache::compile(Some(&dir), "clip.cu", text, "sm_90").unwrap();
        (out, start.elapsed().as_secs_f64() * 1e3)
    };
    let ((compiled, first), compile_ms) = timed(&text);
    let ((cached, second), cached_ms) = timed(&text);
    assert_eq!((first, second), (Outcome::Compiled, Outcome::Cached));
    assert_eq!(cached, compiled);
    assert_eq!(compiled, nvrtc::compile("clip.cu", &text, "sm_90").unwrap());
    say(&format!("kernel cache: clip.cu compiled in {compile_ms:.1} ms, read back in {cached_ms:.2} ms"));
    // Another source is another entry.
    let changed = format!("{text}\n// changed\n");
    assert_eq!(cache::compile(Some(&dir), "clip.cu", &changed, "sm_90").unwrap().1, Outcome::Compiled);
    // An entry whose stored input no longer matches is a miss, and is replaced.
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "cu") {
            std::fs::write(&path, "altered").unwrap();
        }
    }
    assert_eq!(cache::compile(Some(&dir), "clip.cu", &text, "sm_90").unwrap().1, Outcome::Compiled);
    assert_eq!(cache::compile(Some(&dir), "clip.cu", &text, "sm_90").unwrap().1, Outcome::Cached);
    assert_eq!(cache::compile(None, "clip.cu", &text, "sm_90").unwrap().1, Outcome::Compiled);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A line on the real stderr: libtest captures `eprintln!` of passing tests, and a skip must be seen.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}
