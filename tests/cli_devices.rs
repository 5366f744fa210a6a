//! `dp devices`: the CPU line always; the GPU lines say what is missing instead of failing.

mod common;

use common::{dp, text};

#[test]
fn devices_names_the_cpu_and_says_what_of_cuda_is_there() {
    let out = dp(&["devices"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "dp devices failed: {}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    let threads = format!("cpu: {} threads, ", rayon::current_num_threads());
    assert!(lines[0].starts_with(&threads), "first line {:?}, expected {threads:?}…", lines[0]);
    let bf16 = match dp::__private::kernels::gemm_bf16::has_bf16_dot_products() {
        true => "bf16 products on AVX512-BF16",
        false => "bf16 products emulated (no AVX512-BF16",
    };
    assert!(lines[0].contains(bf16), "first line {:?} should say {bf16:?}", lines[0]);
    if cfg!(feature = "cuda") {
        // Which libraries this machine has varies; each line must still be there and say it.
        assert!(lines[1].starts_with("nvrtc: "), "{stdout}");
        assert!(lines[2].starts_with("cuda: "), "{stdout}");
        if std::env::var_os("DP_REQUIRE_NVRTC").is_some() {
            assert!(!lines[1].contains("not found"), "NVRTC is required here: {stdout}");
        }
    } else {
        assert_eq!(lines.len(), 2, "{stdout}");
        assert!(lines[1].starts_with("cuda: not built"), "{stdout}");
        assert!(lines[1].contains("--features cuda"), "the line says how to get it: {stdout}");
    }
}
