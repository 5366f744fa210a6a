//! The device kernels' arithmetic, compiled as C by the host's C compiler (tests/host_harness.c), against
//! the CPU's code in dp-runtime, bit for bit, without a GPU:
//! - update.cu's fold of the parameters into their moving average against `Ema::update`, bit for
//!   bit;
//! - the noise: several keys and lengths (full chunks, a short last chunk, a vector shorter than one
//!   chunk, several retry segments with a short last one), which checks the counter arithmetic, the
//!   ChaCha20 blocks, the interleaved word order, both ziggurat passes and the segments' retry streams,
//!   also with a retry prefix and list short enough that the streams run past the prefix and the
//!   segments are scanned past the list;
//! - the clip factors: flat (one and several groups) and per layer, with NaN, infinite, negative, zero
//!   and huge norms;
//! - the noisy SGD update: plain, momentum (first and later steps), Nesterov, weight decay;
//! - the noisy Adam update: Adam (with and without L2 decay) and AdamW, several betas and ε, the first
//!   update and a later one from checkpointed moments;
//! - conv.cu's element-wise kernels against the host reference of `DeviceOps`
//!   (`dp_runtime::device::host::HostDevice`, bit for bit) and dp-kernels' CPU kernels: im2col and
//!   col2im (padding, stride, dilation, rectangular kernels), max pooling (ties, −∞, NaN) and average
//!   pooling with their backwards, and the kept gradients' weighted sum (factors 0 over NaN rows);
//! - norm.cu's per-value functions (index of each value's channel, statistics, output, the backward's
//!   sums, affine layout, input gradient) with sequential sums in place of the block's and warps',
//!   against dp-kernels' group norm: within 1e-5 of each output's largest magnitude (the sums are
//!   added in another order), NaN where the CPU has NaN;
//! - sequence.cu's per-value functions against the host reference: the embedding's gather (an id
//!   outside the vocabulary giving NaN), its token-grouped norms (ids repeated within an example; also
//!   against dp-kernels' embedding norms, within rounding), its scatter-add (factors 0 over NaN rows,
//!   ids outside the vocabulary), sums and broadcasts over time;
//! - lstm.cu's per-unit functions against the host reference: forward steps at t = 0 (NaN in the
//!   recurrent product and hidden state it must not read) and later, backward steps at the last step
//!   (NaN in the gradients from a next step it must not read) and earlier;
//! - transformer.cu's per-value functions against the host reference: an activation's backward from
//!   its input (GELU, SiLU, exact GELU and the others; within rounding, CUDA's libm against
//!   dp-kernels' own), the strided copy of rows (`first` and its backward) and the patches
//!   permutation both ways and the scaled add of a LoRA sum, bit for bit;
//! - attention.cu's softmax and its backward, a warp's 32 lanes combined in its shuffles' order,
//!   against the host reference to rounding (the lanes sum in another order than its loop): with and
//!   without the causal mask, rows longer than a warp and not a multiple of it, rows of one value, a
//!   row with NaN (NaN where the host has NaN, masked columns exactly 0 even there) and large scores.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use dp_runtime::clipping::{clip_factors, ClipMode};
use dp_runtime::optim::{Adam, NoisyGradient, Optimizer, Sgd, StepInfo};

use dp_cuda::noise::{CHUNK, SEGMENT};
use dp_runtime::device::host::HostDevice;
use dp_runtime::device::{
    Conv2dGeometry, DeviceOps, LstmBackwardStep, LstmDims, LstmForwardStep, LstmSaved, PatchDims,
    Pool2dGeometry, Region, Span,
};
use dp_runtime::noise::gaussian::{fill_chunk, ziggurat_tables};

/// The harness built once per test run, or `None` (with a visible message) when there is no C compiler.
fn harness() -> Option<PathBuf> {
    static BUILT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| build_harness("host_harness", &[])).clone()
}

/// The harness with a segment's retry prefix 20 words long (not a whole number of rows of 16, so
/// that its blocks hold 1 or 2 of its words each) and its list of coordinates to redo 4 long, both
/// fewer than a segment's ~15 retries usually need, so that the streams run on past the prefix
/// (computing blocks on demand) and the segments are scanned past the list.
fn short_prefix_harness() -> Option<PathBuf> {
    static BUILT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            build_harness("host_harness_short_prefix", &["-DDP_PREFIX_WORDS=20u", "-DDP_RETRY_LIST=4u"])
        })
        .clone()
}

fn build_harness(name: &str, defines: &[&str]) -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("dp-cuda-host-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join(name);
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/host_harness.c");
    // IEEE arithmetic as on the device (fmad=false) and in Rust: no contraction, no fast math.
    let built = Command::new("cc")
        .args(["-O2", "-std=c11", "-ffp-contract=off", "-Wall", "-Werror"])
        .args(defines)
        .arg("-o")
        .arg(&exe)
        .arg(source)
        .arg("-lm")
        .output();
    match built {
        Ok(out) if out.status.success() => Some(exe),
        Ok(out) => panic!("the noise kernels do not compile as C:\n{}", String::from_utf8_lossy(&out.stderr)),
        Err(e) if std::env::var_os("DP_REQUIRE_CC").is_none() => {
            say(&format!("3 host kernel tests skipped: no C compiler `cc` ({e})"));
            None
        }
        Err(e) => panic!("DP_REQUIRE_CC is set but `cc` does not run: {e}"),
    }
}

fn tables_file(dir: &std::path::Path) -> PathBuf {
    let tables = ziggurat_tables();
    let bytes: Vec<u8> = tables
        .edge
        .iter()
        .chain(tables.ratio.iter())
        .chain(tables.density.iter())
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let path = dir.join("tables.bin");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn device_noise_arithmetic_equals_the_cpu_draw_bit_for_bit() {
    let Some(exe) = harness() else { return };
    noise_equals_the_cpu(&exe, &[5, 129, CHUNK, 3 * CHUNK + 1001, 2 * CHUNK + 5 * SEGMENT + 77]);
}

#[test]
fn a_retry_stream_read_past_its_prefix_and_list_still_equals_the_cpu_draw() {
    let Some(exe) = short_prefix_harness() else { return };
    let (past_prefix, scanned) = noise_equals_the_cpu(&exe, &[CHUNK, 2 * CHUNK + 5 * SEGMENT + 77]);
    assert!(past_prefix > 0, "no retry word was read past a prefix");
    assert!(scanned > 0, "no segment was scanned past its list");
}

/// Compares the harness's noise with the CPU's for three keys and `lens`; the harness's counts of
/// retry words read past a segment's prefix and of segments scanned past their list, summed.
fn noise_equals_the_cpu(exe: &std::path::Path, lens: &[usize]) -> (u64, u64) {
    let (mut past_prefix, mut scanned) = (0, 0);
    let tables = tables_file(exe.parent().unwrap());
    let keys: [[u8; 32]; 3] =
        [[0; 32], std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11)), [0xff; 32]];
    for key in keys {
        for &len in lens {
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            let out =
                Command::new(exe).arg("noise").arg(&tables).arg(&hex).arg(len.to_string()).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let counts = String::from_utf8_lossy(&out.stderr).into_owned();
            match counts.split_whitespace().collect::<Vec<_>>()[..] {
                ["past_prefix", w, "scanned", s] => {
                    past_prefix += w.parse::<u64>().unwrap();
                    scanned += s.parse::<u64>().unwrap();
                }
                _ => panic!("unexpected harness stderr: {counts}"),
            }
            let device: Vec<f64> =
                out.stdout.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect();
            assert_eq!(device.len(), len);
            let mut cpu = vec![0.0; len];
            for (chunk, values) in cpu.chunks_mut(CHUNK).enumerate() {
                fill_chunk(&key, chunk as u64, values);
            }
            let differing = cpu.iter().zip(&device).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
            assert_eq!(differing, 0, "key {hex}, len {len}: {differing} coordinates differ");
            // The slow path ran: some coordinates beyond the inner rectangles, some in the tail.
            if len > CHUNK {
                assert!(device.iter().any(|v| v.abs() > 3.7), "the tail was reached");
            }
        }
    }
    (past_prefix, scanned)
}

/// Runs the harness with `args`, `input` on stdin; its stdout.
fn run(exe: &std::path::Path, args: &[String], input: &[u8]) -> Vec<u8> {
    run_stored(exe, args, input, 0)
}

/// Runs the harness with `args`, `input` on stdin, the operation's buffers whose bits are set in
/// `bf16` held in bf16 (`DP_HARNESS_BF16`, host_harness.c's `harness_buffer`); its stdout.
fn run_stored(exe: &std::path::Path, args: &[String], input: &[u8], bf16: u32) -> Vec<u8> {
    let mut child = Command::new(exe)
        .args(args)
        .env("DP_HARNESS_BF16", bf16.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "harness {args:?} (bf16 buffers {bf16:#b}) failed");
    out.stdout
}

/// A buffer stored in bf16 holds exactly what the host reference's bf16 store holds
/// (`round_to_bf16`, dp-kernels' bf16 bits): ties to even both ways, the largest finite values
/// (rounding to infinity or not), infinities, subnormals flushed to a zero of their sign, NaNs of
/// both signs and payloads kept NaN with their sign and the quiet bit; and an f32 buffer holds the
/// values unchanged.
#[test]
fn a_bf16_buffer_stores_values_as_the_host_reference_rounds_them_bit_for_bit() {
    let Some(exe) = harness() else { return };
    let mut bits: Vec<u32> = vec![
        0x3f80_8000, // 1 + 2^-8: a tie, to even (down)
        0x3f81_8000, // a tie, to even (up)
        0x3f80_8001,
        0x3f80_7fff,
        0x7f7f_ffff, // f32::MAX rounds to infinity
        0x7f7f_7fff,
        0x7f80_0000,
        0xff80_0000,
        0x0000_0001, // subnormals
        0x8000_0001,
        0x007f_ffff,
        0x0080_0000, // the smallest normal
        0x7fc0_0000,
        0xffc0_0001,
        0x7f80_0001, // a signalling NaN with a low payload
        0xff81_2345,
        0x0000_0000,
        0x8000_0000,
    ];
    bits.extend(values(41, 4_000).map(|u| (u * f64::from(u32::MAX)) as u32));
    let xs: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
    let input: Vec<u8> = xs.iter().flat_map(|v| v.to_le_bytes()).collect();
    let args = vec!["store".to_string(), xs.len().to_string()];
    let stored = f32s(&run_stored(&exe, &args, &input, 1));
    let as_f32 = f32s(&run_stored(&exe, &args, &input, 0));
    for ((x, s), f) in xs.iter().zip(&stored).zip(&as_f32) {
        let expected = dp_kernels::gemm_bf16::round_to_bf16(*x);
        assert_eq!(s.to_bits(), expected.to_bits(), "{:#010x} stored as {:#010x}", x.to_bits(), s.to_bits());
        assert_eq!(f.to_bits(), x.to_bits(), "an f32 buffer changed {:#010x}", x.to_bits());
    }
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

/// A xorshift stream for test values.
fn values(seed: u64, n: usize) -> impl Iterator<Item = f64> {
    let mut state = seed | 1;
    (0..n).map(move |_| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    })
}

#[test]
fn device_clip_factors_equal_the_cpus_bit_for_bit() {
    let Some(exe) = harness() else { return };
    let batch = 500;
    for (mode, groups) in [(ClipMode::Flat, 1), (ClipMode::Flat, 3), (ClipMode::PerLayer, 3)] {
        for clip_norm in [1.0, 0.1, 3.7] {
            let special = [f32::NAN, f32::INFINITY, -1.0, 0.0, f32::MAX, 1e-30, -0.0];
            let sq: Vec<f32> = values(groups as u64 * 7 + 1, batch * groups)
                .enumerate()
                .map(|(i, u)| {
                    if i % 37 == 0 {
                        special[i / 37 % special.len()]
                    } else {
                        (10f64.powf(u * 8.0 - 4.0)) as f32
                    }
                })
                .collect();
            let mut cpu = vec![0.0f32; sq.len()];
            let cpu_bad = clip_factors(mode, clip_norm, groups, &sq, &mut cpu).unwrap();
            let per_layer = matches!(mode, ClipMode::PerLayer) as u8;
            let args = [
                "clip".to_string(),
                per_layer.to_string(),
                format!("{clip_norm:e}"),
                groups.to_string(),
                batch.to_string(),
            ];
            let input: Vec<u8> = sq.iter().flat_map(|v| v.to_le_bytes()).collect();
            let out = run(&exe, &args, &input);
            let device = f32s(&out[..out.len() - 4]);
            let device_bad = u32::from_le_bytes(out[out.len() - 4..].try_into().unwrap()) as usize;
            assert_eq!(device_bad, cpu_bad, "{mode:?} G={groups}");
            assert!(cpu_bad > 0, "invalid norms were in the batch");
            let differing = cpu.iter().zip(&device).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
            assert_eq!(differing, 0, "{mode:?} G={groups} C={clip_norm}");
        }
    }
}

#[test]
fn device_noisy_sgd_update_equals_the_cpus_bit_for_bit() {
    let Some(exe) = harness() else { return };
    let len = 1000;
    let params: Vec<f32> = values(3, len).map(|u| (u - 0.5) as f32).collect();
    let velocity: Vec<f32> = values(5, len).map(|u| (u - 0.5) as f32 * 0.1).collect();
    let sum: Vec<f32> = values(7, len).map(|u| ((u - 0.5) * 40.0) as f32).collect();
    let z: Vec<f64> = values(11, len).map(|u| (u - 0.5) * 6.0).collect();
    let (noise_std, batch) = (1.1 * 0.7, 256.0);
    for (momentum, nesterov, weight_decay) in
        [(0.0, false, 0.0), (0.9, false, 0.0), (0.9, true, 5e-4), (0.5, false, 1e-2)]
    {
        for first in [true, false] {
            let mut sgd = Sgd::new(0.1).momentum(momentum).nesterov(nesterov).weight_decay(weight_decay);
            let mut cpu_params = params.clone();
            let at = StepInfo { step: 0, total_steps: 10 };
            if !first && momentum != 0.0 {
                // Give the optimizer the velocity buffer the device starts from.
                let state = dp_runtime::optim::OptimizerState {
                    kind: "sgd".into(),
                    updates: 1,
                    buffers: vec![("momentum".into(), velocity.clone())],
                };
                sgd.load_state(state, len).unwrap();
            }
            sgd.step(&mut cpu_params, NoisyGradient::with_drawn_noise(&sum, &z, noise_std, batch), at);
            let cpu_velocity = sgd.state().buffers.into_iter().next().map(|(_, b)| b);

            let args: Vec<String> = [
                "sgd".to_string(),
                format!("{noise_std:e}"),
                format!("{:e}", 1.0 / batch),
                format!("{:e}", 0.1),
                format!("{momentum:e}"),
                format!("{weight_decay:e}"),
                (first as u8).to_string(),
                (nesterov as u8).to_string(),
                len.to_string(),
            ]
            .into();
            let input: Vec<u8> = params
                .iter()
                .chain(&velocity)
                .chain(&sum)
                .flat_map(|v| v.to_le_bytes())
                .chain(z.iter().flat_map(|v| v.to_le_bytes()))
                .collect();
            let out = f32s(&run(&exe, &args, &input));
            let (device_params, device_velocity) = out.split_at(len);
            let case = format!("momentum {momentum} nesterov {nesterov} wd {weight_decay} first {first}");
            assert_eq!(bits(&cpu_params), bits(device_params), "{case}");
            if let Some(v) = cpu_velocity {
                assert_eq!(bits(&v), bits(device_velocity), "{case}");
            }
            assert_ne!(bits(&cpu_params), bits(&params), "{case}: the update moved the parameters");
        }
    }
}

/// Runs `op` of the harness on `args` with `inputs` (f32s, concatenated) on stdin.
fn run_f32(exe: &std::path::Path, op: &str, args: &[usize], inputs: &[&[f32]]) -> Vec<f32> {
    let mut all: Vec<String> = vec![op.to_string()];
    all.extend(args.iter().map(usize::to_string));
    let input: Vec<u8> = inputs.iter().flat_map(|v| v.iter().flat_map(|x| x.to_le_bytes())).collect();
    f32s(&run(exe, &all, &input))
}

/// Runs one `DeviceOps` call on a fresh host reference whose `Inputs` region holds `input` and whose
/// `Arena` holds `output_len` NaNs; the `Arena` after it.
fn on_host(
    input: Vec<f32>,
    output_len: usize,
    call: impl FnOnce(&mut HostDevice, Span, Span) -> Result<(), dp_runtime::device::DeviceError>,
) -> Vec<f32> {
    let mut host = HostDevice::new();
    let input_span = Span::new(Region::Inputs, 0, input.len());
    host.set(Region::Inputs, input);
    host.set(Region::Arena, vec![f32::NAN; output_len]);
    call(&mut host, input_span, Span::new(Region::Arena, 0, output_len)).unwrap();
    host.get(Region::Arena).to_vec()
}

fn conv_geometries() -> Vec<Conv2dGeometry> {
    let g = |in_c, in_h, in_w, kh, kw, stride, padding, dilation| Conv2dGeometry {
        in_c,
        in_h,
        in_w,
        out_c: 4,
        kh,
        kw,
        stride,
        padding,
        dilation,
        groups: 1,
    };
    vec![
        g(1, 28, 28, 5, 5, 1, 0, 1),
        g(3, 9, 7, 3, 3, 1, 1, 1),
        g(2, 11, 10, 3, 2, 2, 1, 1),
        g(2, 12, 9, 3, 3, 2, 2, 2),
        g(3, 8, 8, 2, 3, 3, 2, 3),
        g(4, 5, 6, 1, 1, 1, 0, 1),
    ]
}

#[test]
fn device_im2col_and_col2im_equal_the_host_reference_bit_for_bit() {
    let Some(exe) = harness() else { return };
    let n = 3;
    for geom in conv_geometries() {
        geom.assert_valid();
        let args =
            [geom.in_c, geom.in_h, geom.in_w, geom.kh, geom.kw, geom.stride, geom.padding, geom.dilation, n];
        let (inputs, patches) = (n * geom.input_len(), n * geom.patches_len());
        let x: Vec<f32> =
            values(geom.in_h as u64 * 31 + geom.kh as u64, inputs).map(|u| u as f32 - 0.5).collect();
        let cols = run_f32(&exe, "im2col", &args, &[&x]);
        let mut cpu = vec![f32::NAN; patches];
        dp_kernels::conv::im2col(&geom, n, &x, &mut cpu);
        assert_eq!(bits(&cols), bits(&cpu), "im2col {geom:?}");
        let host = on_host(x, patches, |h, x, out| h.im2col(x, &geom, n, out));
        assert_eq!(bits(&cols), bits(&host), "im2col {geom:?}");

        let g: Vec<f32> = values(geom.in_w as u64 * 17 + 3, patches).map(|u| u as f32 - 0.5).collect();
        let dx = run_f32(&exe, "col2im", &args, &[&g]);
        let host = on_host(g, inputs, |h, g, out| h.col2im(g, &geom, n, out));
        assert_eq!(bits(&dx), bits(&host), "col2im {geom:?}");
    }
}

/// Runs one `DeviceOps` call on a fresh host reference in bf16 (`bf16`) or f32 whose `Inputs` region
/// holds `input` and `Factors` `factors`, and whose `Arena` holds `output_len` NaNs; the `Arena` after it.
fn on_host_with_factors(
    (input, factors, bf16): (Vec<f32>, Vec<f32>, bool),
    output_len: usize,
    call: impl FnOnce(&mut HostDevice, Span, Span, Span) -> Result<(), dp_runtime::device::DeviceError>,
) -> Vec<f32> {
    let mut host = HostDevice::new();
    if bf16 {
        host.set_precision(dp_runtime::Precision::Bf16);
    }
    let (input_span, factor_span) =
        (Span::new(Region::Inputs, 0, input.len()), Span::new(Region::Factors, 0, factors.len()));
    host.set(Region::Inputs, input);
    host.set(Region::Factors, factors);
    host.set(Region::Arena, vec![f32::NAN; output_len]);
    call(&mut host, input_span, factor_span, Span::new(Region::Arena, 0, output_len)).unwrap();
    host.get(Region::Arena).to_vec()
}

/// The patches with the batch folded into the columns (`dp_im2col_folded`) and a matrix's examples laid
/// side by side (`dp_fold_examples`) equal the host reference bit for bit, without clip factors and
/// with them (example 1's factor 0 over its NaN: zeros; the others scaled, in bf16 after rounding to
/// bf16); and the folded patches are im2col's laid side by side, so one product over them is the sum
/// of the per-example products.
#[test]
fn device_folded_patches_and_examples_side_by_side_equal_the_host_reference_bit_for_bit() {
    let Some(exe) = harness() else { return };
    let n = 3;
    let (groups, group) = (2, 1);
    let factors: Vec<f32> =
        (0..n * groups).map(|k| if k == groups + group { 0.0 } else { 0.3 + k as f32 / 5.0 }).collect();
    // Without factors; with them in f32; with them in bf16 (the values rounded before they are scaled).
    let ways = [(false, false), (true, false), (true, true)];
    for geom in conv_geometries() {
        let (inputs, patches) = (n * geom.input_len(), n * geom.patches_len());
        let mut x: Vec<f32> =
            values(geom.in_h as u64 * 29 + geom.kw as u64, inputs).map(|u| u as f32 - 0.5).collect();
        x[geom.input_len()] = f32::NAN;
        for (weighted, bf16) in ways {
            let args = [
                geom.in_c,
                geom.in_h,
                geom.in_w,
                geom.kh,
                geom.kw,
                geom.stride,
                geom.padding,
                geom.dilation,
                n,
                usize::from(weighted),
                usize::from(bf16),
                groups,
                group,
            ];
            let folded = run_f32(&exe, "im2colfolded", &args, &[&x, &factors]);
            let host = on_host_with_factors((x.clone(), factors.clone(), bf16), patches, |h, x, f, out| {
                h.im2col_folded(x, &geom, n, weighted.then_some((f, groups, group)), out)
            });
            assert_eq!(bits(&folded), bits(&host), "im2col_folded {geom:?}, factors {weighted}, bf16 {bf16}");
            if weighted {
                let t = geom.positions();
                let mut example_1 =
                    (0..patches / (n * t)).flat_map(|k| folded[(k * n + 1) * t..(k * n + 2) * t].to_vec());
                assert!(example_1.all(|v| v == 0.0), "im2col_folded {geom:?}: example 1 not zero");
            }
            if bf16 {
                let rounded = folded.iter().all(|v| v.is_nan() || v.to_bits() & 0xffff == 0);
                assert!(rounded, "im2col_folded {geom:?}: values not rounded to bf16");
            }
        }
        let unfolded = on_host(x.clone(), patches, |h, x, out| h.im2col(x, &geom, n, out));
        let rows = geom.patches_len() / geom.positions();
        let side_by_side = on_host(unfolded, patches, |h, src, out| {
            h.fold_examples(src, (n, rows, geom.positions()), None, out)
        });
        let folded = on_host(x, patches, |h, x, out| h.im2col_folded(x, &geom, n, None, out));
        assert_eq!(bits(&folded), bits(&side_by_side), "im2col_folded {geom:?} against im2col folded");
    }
    for (rows, cols) in [(1, 1), (3, 5), (8, 33), (2, 1024)] {
        let mut src: Vec<f32> =
            values(rows as u64 * 7 + cols as u64, n * rows * cols).map(|u| u as f32 - 0.37).collect();
        src[rows * cols] = f32::NAN;
        for (weighted, bf16) in ways {
            let args = [n, rows, cols, usize::from(weighted), usize::from(bf16), groups, group];
            let device = run_f32(&exe, "fold", &args, &[&src, &factors]);
            let host = on_host_with_factors(
                (src.clone(), factors.clone(), bf16),
                n * rows * cols,
                |h, s, f, out| {
                    h.fold_examples(s, (n, rows, cols), weighted.then_some((f, groups, group)), out)
                },
            );
            assert_eq!(bits(&device), bits(&host), "fold {rows}x{cols}, factors {weighted}, bf16 {bf16}");
            let round = |v: f32| if bf16 { dp_kernels::gemm_bf16::round_to_bf16(v) } else { v };
            for (i, r, c) in [(0, 0, 0), (n - 1, rows - 1, cols - 1), (1, rows / 2, cols / 3)] {
                let want = match (weighted, i) {
                    (false, _) => src[(i * rows + r) * cols + c],
                    (true, 1) => 0.0,
                    (true, _) => factors[i * groups + group] * round(src[(i * rows + r) * cols + c]),
                };
                assert_eq!(host[r * n * cols + i * cols + c].to_bits(), want.to_bits(), "fold {rows}x{cols}");
            }
        }
    }
}

/// A ghost norm from two Gram matrices per example (`dp_gram_sq_norms`), with and without a bias:
/// each example's 1,024 thread shares combined as the kernel combines them, against the host
/// reference's sum in double to 1e-6 relative.
#[test]
fn device_gram_norms_equal_the_host_reference() {
    let Some(exe) = harness() else { return };
    let (n, groups, group) = (5, 3, 2);
    for (len, bias_len) in [(1, 0), (64 * 64, 0), (16 * 16, 10), (3000, 7)] {
        let a: Vec<f32> = values(len as u64 + 1, n * len).map(|u| u as f32 - 0.5).collect();
        let b: Vec<f32> = values(len as u64 + 2, n * len).map(|u| u as f32 - 0.25).collect();
        let bias: Vec<f32> = values(len as u64 + 3, n * bias_len).map(|u| u as f32).collect();
        let sq = vec![7.0f32; n * groups];
        let device = run_f32(&exe, "gramnorms", &[n, len, bias_len, groups, group], &[&a, &b, &bias, &sq]);
        let mut host = HostDevice::new();
        let mut arena = a.clone();
        arena.extend(&b);
        arena.extend(&bias);
        host.set(Region::Arena, arena);
        host.set(Region::SqNorms, sq.clone());
        let (sa, sb) = (Span::new(Region::Arena, 0, n * len), Span::new(Region::Arena, n * len, n * len));
        let bias_span =
            (bias_len > 0).then_some((Span::new(Region::Arena, 2 * n * len, n * bias_len), bias_len));
        host.gram_sq_norms(
            (sa, sb),
            len,
            bias_span,
            n,
            Span::new(Region::SqNorms, 0, n * groups),
            groups,
            group,
        )
        .unwrap();
        for (k, (&d, &h)) in device.iter().zip(host.get(Region::SqNorms)).enumerate() {
            assert!(
                (d - h).abs() <= 1e-6 * h.abs().max(1.0),
                "gram norms {len}/{bias_len}[{k}]: device {d}, host {h}"
            );
        }
        assert!(
            device.iter().enumerate().all(|(k, &v)| k % groups == group || v == 7.0),
            "other groups kept"
        );
    }
}

/// A grouped conv's patches on the device are the whole image's (the kernels take no group count):
/// the kernels equal `HostDevice` on grouped geometry too, two groups and a group per channel. (The
/// CPU's grouped patches are laid out group-major, so they are not compared here.)
#[test]
fn device_im2col_and_col2im_of_grouped_geometry_equal_the_host_reference_bit_for_bit() {
    let Some(exe) = harness() else { return };
    let n = 3;
    let g = |in_c, out_c, groups, stride, padding| Conv2dGeometry {
        in_c,
        in_h: 7,
        in_w: 6,
        out_c,
        kh: 3,
        kw: 3,
        stride,
        padding,
        dilation: 1,
        groups,
    };
    for geom in [g(4, 6, 2, 2, 1), g(5, 5, 5, 1, 1)] {
        geom.assert_valid();
        let args =
            [geom.in_c, geom.in_h, geom.in_w, geom.kh, geom.kw, geom.stride, geom.padding, geom.dilation, n];
        let (inputs, patches) = (n * geom.input_len(), n * geom.patches_len());
        let x: Vec<f32> = values(geom.groups as u64 * 13, inputs).map(|u| u as f32 - 0.5).collect();
        let cols = run_f32(&exe, "im2col", &args, &[&x]);
        let host = on_host(x, patches, |h, x, out| h.im2col(x, &geom, n, out));
        assert_eq!(bits(&cols), bits(&host), "im2col {geom:?}");

        let g: Vec<f32> = values(geom.groups as u64 * 17 + 3, patches).map(|u| u as f32 - 0.5).collect();
        let dx = run_f32(&exe, "col2im", &args, &[&g]);
        let host = on_host(g, inputs, |h, g, out| h.col2im(g, &geom, n, out));
        assert_eq!(bits(&dx), bits(&host), "col2im {geom:?}");
    }
}

fn pool_geometries() -> Vec<Pool2dGeometry> {
    let g = |channels, in_h, in_w, kernel, stride, padding| Pool2dGeometry {
        channels,
        in_h,
        in_w,
        kernel,
        stride,
        padding,
    };
    vec![
        g(2, 6, 6, 2, 1, 0),
        g(3, 8, 7, 2, 2, 0),
        g(2, 7, 7, 3, 2, 1),
        g(1, 5, 6, 4, 3, 2),
        g(16, 14, 14, 2, 2, 0),
        g(2, 9, 41, 3, 2, 1),
        g(2, 9, 40, 3, 1, 1),
    ]
}

#[test]
fn device_pooling_equals_the_host_reference_and_the_cpu_kernels() {
    let Some(exe) = harness() else { return };
    let n = 3;
    for geom in pool_geometries() {
        geom.assert_valid();
        let args = [geom.channels, geom.in_h, geom.in_w, geom.kernel, geom.stride, geom.padding, n];
        let (inputs, outputs) = (n * geom.input_len(), n * geom.output_len());
        // A few levels, so that windows tie, with −∞ and NaN among them.
        let x: Vec<f32> = (0..inputs)
            .map(|k| match k % 53 {
                5 => f32::NEG_INFINITY,
                11 => f32::NAN,
                _ => (k * 7919 % 5) as f32,
            })
            .collect();
        let out = run_f32(&exe, "maxpool", &args, &[&x]);
        let (y, argmax) = out.split_at(outputs);
        let (mut cpu_y, mut cpu_argmax) = (vec![0.0f32; outputs], vec![0u32; outputs]);
        dp_kernels::pool::max_pool2d_forward(&geom, n, &x, &mut cpu_y, &mut cpu_argmax);
        assert_eq!(bits(y), bits(&cpu_y), "max pool {geom:?}");
        assert_eq!(bits(argmax), cpu_argmax, "max pool argmax {geom:?}");
        assert!(y.iter().any(|v| v.is_nan()), "a window with a NaN");
        let mut host_device = HostDevice::new();
        host_device.set(Region::Inputs, x.clone());
        host_device.set(Region::Arena, vec![f32::NAN; 2 * outputs]);
        let arena = |from| Span::new(Region::Arena, from, outputs);
        host_device
            .max_pool_forward(Span::new(Region::Inputs, 0, inputs), &geom, n, arena(0), arena(outputs))
            .unwrap();
        assert_eq!(bits(&host_device.get(Region::Arena)[..outputs]), bits(y), "max pool {geom:?}");
        assert_eq!(bits(&host_device.get(Region::Arena)[outputs..]), bits(argmax), "argmax {geom:?}");

        let dy: Vec<f32> = values(geom.in_w as u64 * 13 + 1, outputs).map(|u| u as f32 - 0.5).collect();
        let dx = run_f32(&exe, "maxpoolback", &args, &[&dy, argmax]);
        let mut cpu_dx = vec![f32::NAN; inputs];
        dp_kernels::pool::max_pool2d_backward(&geom, n, &dy, &cpu_argmax, &mut cpu_dx);
        assert_eq!(bits(&dx), bits(&cpu_dx), "max pool backward {geom:?}");
        let dy_argmax = [dy.as_slice(), argmax].concat();
        let host = on_host(dy_argmax, inputs, |h, d, out| {
            h.max_pool_backward(d.sub(0, outputs), d.sub(outputs, outputs), &geom, n, out)
        });
        assert_eq!(bits(&dx), bits(&host), "max pool backward {geom:?}");

        let x: Vec<f32> = values(geom.in_h as u64 * 7 + 5, inputs).map(|u| u as f32 - 0.5).collect();
        let y = run_f32(&exe, "avgpool", &args, &[&x]);
        let host = on_host(x.clone(), outputs, |h, x, out| h.avg_pool_forward(x, &geom, n, out));
        assert_eq!(bits(&y), bits(&host), "avg pool {geom:?}");
        let mut cpu_y = vec![f32::NAN; outputs];
        dp_kernels::pool::avg_pool2d_forward(&geom, n, &x, &mut cpu_y);
        for (k, (a, b)) in y.iter().zip(&cpu_y).enumerate() {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "avg pool {geom:?} output {k}: {a} vs {b}");
        }
        let dx = run_f32(&exe, "avgpoolback", &args, &[&dy]);
        let host = on_host(dy.clone(), inputs, |h, d, out| h.avg_pool_backward(d, &geom, n, out));
        assert_eq!(bits(&dx), bits(&host), "avg pool backward {geom:?}");
        let mut cpu_dx = vec![f32::NAN; inputs];
        dp_kernels::pool::avg_pool2d_backward(&geom, n, &dy, &mut cpu_dx);
        for (k, (a, b)) in dx.iter().zip(&cpu_dx).enumerate() {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "avg backward {geom:?} input {k}: {a} vs {b}");
        }
    }
}

#[test]
fn device_kept_weighted_sum_equals_the_host_reference_and_skips_factor_zero_rows() {
    let Some(exe) = harness() else { return };
    let (n, len, groups, group) = (7, 301, 3, 1);
    let mut src: Vec<f32> = values(3, n * len).map(|u| u as f32 - 0.5).collect();
    let mut factors: Vec<f32> = values(9, n * groups).map(|u| u as f32).collect();
    // Examples 2 and 5 have factor 0 and NaN rows, which must not reach the sum.
    for i in [2, 5] {
        factors[i * groups + group] = 0.0;
        src[i * len..(i + 1) * len].fill(f32::NAN);
    }
    let dst: Vec<f32> = values(4, len).map(|u| u as f32).collect();
    for has in [1usize, 0] {
        let out = run_f32(&exe, "keptsum", &[n, len, has, groups, group], &[&src, &factors, &dst]);
        let mut host = HostDevice::new();
        host.set(Region::Arena, src.clone());
        host.set(Region::Factors, factors.clone());
        host.set(Region::Grad, dst.clone());
        let f = (has == 1).then_some((Span::new(Region::Factors, 0, n * groups), groups, group));
        host.kept_weighted_sum(
            Span::new(Region::Arena, 0, n * len),
            n,
            len,
            f,
            Span::new(Region::Grad, 0, len),
        )
        .unwrap();
        assert_eq!(bits(&out), bits(host.get(Region::Grad)), "has_factors {has}");
        assert_eq!(out.iter().all(|v| v.is_finite()), has == 1, "NaN rows only without factors");
    }
}

/// Group norm forward and backward: several shapes (one channel per group, one group, planes of one
/// value, a plane past a warp's width), with a NaN input in one example and a NaN gradient in another.
#[test]
fn device_group_norm_arithmetic_equals_the_cpus() {
    use dp_kernels::norm_layers::{group_norm_backward, group_norm_forward, GroupNormDims};
    let Some(exe) = harness() else { return };
    for (channels, groups, plane, n) in [(16, 4, 100, 5), (6, 3, 49, 7), (8, 1, 1, 3), (4, 4, 33, 2)] {
        let dims = GroupNormDims { channels, plane, groups };
        let values_len = n * dims.input_len();
        let mut x: Vec<f32> =
            values(channels as u64 * 5 + plane as u64, values_len).map(|u| (3.0 + 2.0 * u) as f32).collect();
        let weight: Vec<f32> = values(11, channels).map(|u| (0.5 + u) as f32).collect();
        let bias: Vec<f32> = values(12, channels).map(|u| (u - 0.5) as f32).collect();
        let mut dy: Vec<f32> = values(13, values_len).map(|u| (u - 0.5) as f32).collect();
        x[(n / 2) * dims.input_len() + dims.input_len() / 2] = f32::NAN;
        if n > 1 {
            dy[(n - 1) * dims.input_len()] = f32::NAN;
        }
        let out = run_f32(&exe, "groupnorm", &[channels, plane, groups, n], &[&x, &weight, &bias, &dy]);
        let stats = n * groups;
        let mut cpu = [vec![0.0; values_len], vec![0.0; stats], vec![0.0; stats]];
        let [y, mean, rstd] = &mut cpu;
        group_norm_forward(&dims, n, &x, &weight, &bias, y, mean, rstd);
        let (mut dx, mut affine) = (vec![0.0; values_len], vec![0.0; n * 2 * channels]);
        group_norm_backward(&dims, n, &x, &dy, &weight, mean, rstd, &mut dx, &mut affine);
        let mut at = 0;
        let case = format!("C={channels} G={groups} plane={plane} n={n}");
        for (name, cpu) in
            [("y", y), ("mean", mean), ("rstd", rstd), ("dx", &mut dx), ("affine", &mut affine)]
        {
            let device = &out[at..at + cpu.len()];
            at += cpu.len();
            assert_near_largest(cpu, device, 1e-5, &format!("{name} {case}"));
        }
        assert_eq!(at, out.len(), "{case}");
    }
}

/// Runs `op` of the harness on `args` with `ids` (u32s) and then `inputs` (f32s) on stdin.
fn run_ids(exe: &std::path::Path, op: &str, args: &[usize], ids: &[u32], inputs: &[&[f32]]) -> Vec<f32> {
    let mut all: Vec<String> = vec![op.to_string()];
    all.extend(args.iter().map(usize::to_string));
    let input: Vec<u8> = ids
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .chain(inputs.iter().flat_map(|v| v.iter().flat_map(|x| x.to_le_bytes())))
        .collect();
    f32s(&run(exe, &all, &input))
}

/// Buffers laid end to end in the host reference's arena: each one's span.
fn in_arena(host: &mut HostDevice, buffers: &[&[f32]]) -> Vec<Span> {
    let mut spans = Vec::new();
    let mut at = 0;
    for b in buffers {
        spans.push(Span::new(Region::Arena, at, b.len()));
        at += b.len();
    }
    host.set(Region::Arena, buffers.concat());
    spans
}

fn arena_of(host: &HostDevice, s: Span) -> Vec<f32> {
    host.get(Region::Arena)[s.offset..s.offset + s.len].to_vec()
}

#[test]
fn device_embedding_over_a_sequence_equals_the_host_reference() {
    let Some(exe) = harness() else { return };
    let (n, steps, vocab, dim, groups, group) = (5, 9, 6, 4, 2, 1);
    // Six tokens over nine positions: every example repeats some.
    let mut ids: Vec<u32> = values(21, n * steps).map(|u| (u * vocab as f64) as u32).collect();
    let table: Vec<f32> = values(22, vocab * dim).map(|u| u as f32 - 0.5).collect();
    let mut delta: Vec<f32> = values(23, n * steps * dim).map(|u| u as f32 - 0.5).collect();
    let tokens = |host: &mut HostDevice, ids: &[u32]| {
        host.set_tokens(ids.to_vec());
        Span::new(Region::Tokens, 0, ids.len())
    };

    let norms = run_ids(&exe, "embnorms", &[n, steps, dim], &ids, &[&delta]);
    let mut host = HostDevice::new();
    let id_span = tokens(&mut host, &ids);
    host.set(Region::Inputs, delta.clone());
    host.set(Region::SqNorms, vec![f32::NAN; n * groups]);
    let sq = Span::new(Region::SqNorms, 0, n * groups);
    host.embedding_norms(
        id_span,
        Span::new(Region::Inputs, 0, delta.len()),
        n,
        steps,
        dim,
        sq,
        groups,
        group,
    )
    .unwrap();
    let mut cpu = vec![0.0f32; n];
    let mut scratch = vec![0.0f32; n * dp_kernels::embedding::norm_scratch_len(steps, dim)];
    dp_kernels::embedding::embedding_norms_sq(vocab, dim, n, steps, &ids, &delta, &mut scratch, &mut cpu, 1);
    for i in 0..n {
        let reference = host.get(Region::SqNorms)[i * groups + group];
        let close = |a: f32, b: f32| (a - b).abs() <= 1e-5 * b.abs();
        assert!(close(norms[i], reference), "example {i}: kernel {}, host {reference}", norms[i]);
        assert!(close(norms[i], cpu[i]), "example {i}: kernel {}, cpu {}", norms[i], cpu[i]);
        let example = &ids[i * steps..(i + 1) * steps];
        assert!(example.iter().enumerate().any(|(t, v)| example[..t].contains(v)), "example {i} repeats");
    }

    // One id outside the vocabulary: a row of NaN forward, nothing scattered.
    ids[7] = vocab as u32 + 3;
    let rows = run_ids(&exe, "embgather", &[n, steps, vocab, dim], &ids, &[&table]);
    let mut host = HostDevice::new();
    let id_span = tokens(&mut host, &ids);
    host.set(Region::Params, table.clone());
    host.set(Region::Arena, vec![0.0; n * steps * dim]);
    let out = Span::new(Region::Arena, 0, n * steps * dim);
    host.embedding_forward(id_span, Span::new(Region::Params, 0, table.len()), n, steps, vocab, dim, out)
        .unwrap();
    assert_eq!(bits(&rows), bits(host.get(Region::Arena)), "gather");
    assert!(rows[7 * dim..8 * dim].iter().all(|v| v.is_nan()), "the row of an id outside the vocabulary");

    let mut factors: Vec<f32> = values(24, n * groups).map(|u| u as f32).collect();
    factors[2 * groups + group] = 0.0;
    delta[2 * steps * dim..3 * steps * dim].fill(f32::NAN);
    let grad: Vec<f32> = values(25, vocab * dim).map(|u| u as f32).collect();
    for has in [1usize, 0] {
        let delta = match has {
            1 => delta.clone(),
            _ => delta.iter().map(|v| if v.is_nan() { 0.25 } else { *v }).collect(),
        };
        let args = [n, steps, vocab, dim, has, groups, group];
        let out = run_ids(&exe, "embscatter", &args, &ids, &[&delta, &factors, &grad]);
        let mut host = HostDevice::new();
        let id_span = tokens(&mut host, &ids);
        host.set(Region::Inputs, delta.clone());
        host.set(Region::Factors, factors.clone());
        host.set(Region::Grad, grad.clone());
        let f = (has == 1).then_some((Span::new(Region::Factors, 0, n * groups), groups, group));
        let (d, g) = (Span::new(Region::Inputs, 0, delta.len()), Span::new(Region::Grad, 0, grad.len()));
        host.embedding_scatter(id_span, d, n, steps, vocab, dim, f, g).unwrap();
        assert_eq!(bits(&out), bits(host.get(Region::Grad)), "scatter, has_factors {has}");
        assert!(out.iter().all(|v| v.is_finite()), "a factor-0 example's NaN rows are never read");
    }
}

#[test]
fn device_sums_over_time_equal_the_host_reference() {
    let Some(exe) = harness() else { return };
    for (n, steps, cols) in [(3, 7, 5), (1, 256, 100), (4, 1, 3)] {
        let scale = 1.0 / steps as f32;
        let src: Vec<f32> = values(steps as u64, n * steps * cols).map(|u| u as f32 - 0.5).collect();
        let args = [n.to_string(), steps.to_string(), cols.to_string(), format!("{scale:e}")];
        let call = |op: &str, input: &[f32]| {
            let mut all = vec![op.to_string()];
            all.extend(args.iter().cloned());
            f32s(&run(&exe, &all, &input.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()))
        };
        let sums = call("seqsums", &src);
        let host = on_host(src.clone(), n * cols, |h, s, out| h.sequence_sums(s, n, steps, cols, scale, out));
        assert_eq!(bits(&sums), bits(&host), "sums over {steps} steps");
        let broadcast = call("seqbroadcast", &src[..n * cols]);
        let host = on_host(src[..n * cols].to_vec(), n * steps * cols, |h, s, out| {
            h.sequence_broadcast(s, n, steps, cols, scale, out)
        });
        assert_eq!(bits(&broadcast), bits(&host), "broadcast over {steps} steps");
    }
}

#[test]
fn device_lstm_steps_equal_the_host_reference() {
    let Some(exe) = harness() else { return };
    let (n, steps, h) = (3, 5, 4);
    let dims = LstmDims { steps, input: 2, hidden: h };
    let (seq, units) = (n * steps * h, n * h);
    let draw = |seed: u64, len: usize, scale: f64| -> Vec<f32> {
        values(seed, len).map(|u| ((u - 0.5) * scale) as f32).collect()
    };
    for t in [0, 3, steps - 1] {
        // Saved gates in (0, 1) as activated gates are; the rest spread over both signs.
        let mut gates = draw(31 + t as u64, 4 * seq, 4.0);
        let cells = draw(32, seq, 3.0);
        let (hprev, out) = (draw(33, seq, 1.0), draw(34, seq, 1.0));
        let (mut hidden, mut recurrent) = (draw(35, units, 2.0), draw(36, 4 * units, 2.0));
        let bias = draw(37, 4 * h, 1.0);
        if t == 0 {
            hidden.fill(f32::NAN);
            recurrent.fill(f32::NAN);
        }
        let args = [n, steps, h, t];
        let device =
            run_f32(&exe, "lstmforward", &args, &[&gates, &cells, &hprev, &out, &hidden, &recurrent, &bias]);
        let mut host = HostDevice::new();
        let s = in_arena(&mut host, &[&gates, &cells, &hprev, &out, &hidden, &recurrent, &bias]);
        let step = LstmForwardStep {
            saved: LstmSaved { gates: s[0], cells: s[1], hprev: s[2] },
            out: s[3],
            hidden: s[4],
            recurrent: s[5],
            bias: s[6],
        };
        host.lstm_forward_step(&step, &dims, n, t).unwrap();
        let want: Vec<f32> = s[..5].iter().flat_map(|&span| arena_of(&host, span)).collect();
        assert_eq!(bits(&device), bits(&want), "forward step {t}");
        assert!(device.iter().all(|v| v.is_finite()), "forward step {t} read nothing it must not");

        // The backward reads activated gates.
        gates.iter_mut().for_each(|g| *g = 1.0 / (1.0 + (-*g).exp()));
        let dout = draw(38, seq, 1.0);
        let (mut dh, mut cell_grad) = (draw(39, units, 1.0), draw(40, units, 1.0));
        let (step_delta, delta) = (vec![f32::NAN; 4 * units], vec![f32::NAN; 4 * seq]);
        if t + 1 == steps {
            dh.fill(f32::NAN);
            cell_grad.fill(f32::NAN);
        }
        let inputs: [&[f32]; 7] = [&gates, &cells, &dout, &dh, &cell_grad, &step_delta, &delta];
        let device = run_f32(&exe, "lstmbackward", &args, &inputs);
        let mut host = HostDevice::new();
        let s = in_arena(&mut host, &inputs);
        let step = LstmBackwardStep {
            gates: s[0],
            cells: s[1],
            dout: s[2],
            recurrent: s[3],
            cell_grad: s[4],
            step_delta: s[5],
            delta: s[6],
        };
        host.lstm_backward_step(&step, &dims, n, t).unwrap();
        let want: Vec<f32> = s[4..].iter().flat_map(|&span| arena_of(&host, span)).collect();
        assert_eq!(bits(&device), bits(&want), "backward step {t}");
        // Only step t's rows of δ are written, and nothing read from a next step at the last one.
        let (from_step, delta_out) = device.split_at(5 * units);
        assert!(from_step.iter().all(|v| v.is_finite()), "backward step {t} read nothing it must not");
        for (row, values) in delta_out.chunks(4 * h).enumerate() {
            assert_eq!(values.iter().all(|v| v.is_finite()), row % steps == t, "step {t}: δ row {row}");
        }
    }
}

#[test]
fn device_activation_backward_from_input_equals_the_host_reference() {
    let Some(exe) = harness() else { return };
    let len = 4001;
    // Inputs over [-8, 8] (both erf forms, sigmoid's tails), a NaN and the infinities.
    let mut x: Vec<f32> = values(5, len).map(|u| (u as f32 - 0.5) * 16.0).collect();
    (x[0], x[1], x[2], x[3]) = (0.0, f32::NAN, f32::INFINITY, -0.3);
    let grad: Vec<f32> = values(6, len).map(|u| u as f32 - 0.25).collect();
    for act in stored::ACTIVATIONS {
        let code = dp_cuda::dense::activation_code(act) as usize;
        let device = run_f32(&exe, "actinput", &[len, code], &[&grad, &x]);
        let mut host = HostDevice::new();
        host.set(Region::Inputs, x.clone());
        host.set(Region::Arena, grad.clone());
        let (xs, gs) = (Span::new(Region::Inputs, 0, len), Span::new(Region::Arena, 0, len));
        host.activation_backward_from_input(gs, xs, len, act).unwrap();
        let host = host.get(Region::Arena);
        for (k, (d, h)) in device.iter().zip(host).enumerate() {
            let ok = if h.is_nan() { d.is_nan() } else { (d - h).abs() <= 2e-6 * (1.0 + h.abs()) };
            assert!(ok, "{act:?} at x = {}: device {d}, host {h}", x[k]);
        }
    }
}

#[test]
fn device_strided_copy_and_patches_equal_the_host_reference_bit_for_bit() {
    let Some(exe) = harness() else { return };
    // `first` (rows of 5 out of 7·5), its backward (into position 0 of each example), and a square copy.
    for (rows, cols, ss, ds) in [(3, 5, 35, 5), (3, 5, 5, 35), (4, 6, 6, 6), (1, 1, 1, 1)] {
        let (src_len, dst_len) = ((rows - 1) * ss + cols, (rows - 1) * ds + cols);
        let src: Vec<f32> = values(7, src_len).map(|u| u as f32).collect();
        let dst: Vec<f32> = values(8, dst_len).map(|u| -(u as f32)).collect();
        let device = run_f32(&exe, "copystrided", &[rows, cols, ss, ds, src_len, dst_len], &[&src, &dst]);
        let mut host = HostDevice::new();
        host.set(Region::Inputs, src.clone());
        host.set(Region::Arena, dst.clone());
        let (s, d) = (Span::new(Region::Inputs, 0, src_len), Span::new(Region::Arena, 0, dst_len));
        host.copy_strided(s, ss, d, ds, rows, cols).unwrap();
        assert_eq!(bits(&device), bits(host.get(Region::Arena)), "copy of {rows}×{cols}, strides {ss}, {ds}");
        assert_ne!(bits(&device), bits(&dst), "the copy wrote");
    }
    for (dims, n) in [
        (PatchDims { channels: 2, height: 8, width: 8, size: 4 }, 3),
        (PatchDims { channels: 1, height: 28, width: 28, size: 4 }, 2),
        (PatchDims { channels: 3, height: 6, width: 9, size: 3 }, 1),
    ] {
        let len = n * dims.len();
        let x: Vec<f32> = values(9, len).map(|u| u as f32).collect();
        let (c, h, w, p) = (dims.channels, dims.height, dims.width, dims.size);
        let forward = run_f32(&exe, "patches", &[c, h, w, p, n, 1], &[&x]);
        let host = on_host(x.clone(), len, |hd, s, out| hd.patches_forward(s, &dims, n, out));
        assert_eq!(bits(&forward), bits(&host), "patches of {dims:?}");
        let mut cpu = vec![0.0; len];
        dp_kernels::patches::image_to_patches(&dims, n, &x, &mut cpu);
        assert_eq!(bits(&forward), bits(&cpu), "patches of {dims:?} against dp-kernels");
        let backward = run_f32(&exe, "patches", &[c, h, w, p, n, 0], &[&forward]);
        let host = on_host(forward.clone(), len, |hd, s, out| hd.patches_backward(s, &dims, n, out));
        assert_eq!(bits(&backward), bits(&host), "images of {dims:?}");
        assert_eq!(bits(&backward), bits(&x), "the backward inverts the forward");
    }
}

#[test]
fn device_attention_softmax_equals_the_host_reference() {
    let Some(exe) = harness() else { return };
    for (blocks, steps) in [(3, 5), (2, 37), (4, 1), (1, 64)] {
        let len = blocks * steps * steps;
        let scale = 1.0 / (steps as f32).sqrt();
        let mut scores: Vec<f32> =
            values(steps as u64 + 50, len).map(|u| ((u - 0.5) * 40.0) as f32).collect();
        // A NaN score in block 0's last row (every column of it visible), a huge one in its first.
        scores[steps * steps - 1] = f32::NAN;
        scores[0] = 3.0e38;
        for causal in [false, true] {
            let args = [
                blocks.to_string(),
                steps.to_string(),
                format!("{scale:e}"),
                usize::from(causal).to_string(),
            ];
            let mut all = vec!["attnsoftmax".to_string()];
            all.extend(args.iter().cloned());
            let input: Vec<u8> = scores.iter().flat_map(|v| v.to_le_bytes()).collect();
            let device = f32s(&run(&exe, &all, &input));
            let host = on_host(scores.clone(), len, |h, s, out| {
                h.copy(out, s, len)?;
                h.attention_softmax(out, blocks, steps, scale, causal)
            });
            // The warp sums in another order than the host's loop: equal to rounding, NaN where it is.
            for (i, (&d, &h)) in device.iter().zip(&host).enumerate() {
                let close = (d - h).abs() <= 1e-6 * h.abs() || (d.is_nan() && h.is_nan());
                assert!(close, "softmax {blocks}×{steps}² causal {causal}: value {i} is {d}, host {h}");
            }
            for (r, row) in device.chunks(steps).enumerate() {
                let visible = if causal { r % steps + 1 } else { steps };
                assert!(row[visible..].iter().all(|&v| v == 0.0), "row {r}: masked columns exactly 0");
                let sum: f32 = row.iter().sum();
                // Block 0's last row sees its NaN, causal or not (with one step, the huge score is over it).
                let poisoned = r == steps - 1 && steps > 1;
                assert!(poisoned == sum.is_nan(), "row {r} of {blocks}×{steps}²: sum {sum}");
                assert!(sum.is_nan() || (sum - 1.0).abs() < 1e-5, "row {r}: sums to {sum}");
            }

            // The backward from these probabilities (NaN rows stay NaN) and a spread gradient.
            let dp: Vec<f32> = values(steps as u64 + 60, len).map(|u| (u - 0.5) as f32).collect();
            let mut all = vec!["attnsoftmaxback".to_string()];
            all.extend(args[..3].iter().cloned());
            let input: Vec<u8> = device.iter().chain(&dp).flat_map(|v| v.to_le_bytes()).collect();
            let back = f32s(&run(&exe, &all, &input));
            let host = on_host([device.clone(), dp.clone()].concat(), len, |h, s, out| {
                h.copy(out, s.sub(len, len), len)?;
                h.attention_softmax_backward(s.sub(0, len), out, blocks, steps, scale)
            });
            // scale · p · (dP − dot): the dot's rounding, relative to the terms it sums, times p.
            for (r, ((b, h), (p, g))) in back
                .chunks(steps)
                .zip(host.chunks(steps))
                .zip(device.chunks(steps).zip(dp.chunks(steps)))
                .enumerate()
            {
                let terms: f32 = p.iter().zip(g).map(|(p, g)| (p * g).abs()).sum();
                for c in 0..steps {
                    let bound = 1e-6 * scale * p[c].abs() * (g[c].abs() + terms);
                    let close = (b[c] - h[c]).abs() <= bound || (b[c].is_nan() && h[c].is_nan());
                    assert!(close, "softmax backward {blocks}×{steps}² causal {causal}: row {r} column {c}");
                }
            }
        }
    }
}

#[test]
fn device_scaled_add_equals_the_host_reference_bit_for_bit() {
    let Some(exe) = harness() else { return };
    let len = 1001;
    let dst: Vec<f32> = values(10, len).map(|u| u as f32 - 0.5).collect();
    let src: Vec<f32> = values(11, len).map(|u| (u as f32 - 0.5) * 3.0).collect();
    for scale in [2.0f32, 0.125, 1.0 / 3.0] {
        let args = [len.to_string(), format!("{scale:e}")];
        let mut all = vec!["addscaled".to_string()];
        all.extend(args.iter().cloned());
        let input: Vec<u8> = dst.iter().chain(&src).flat_map(|v| v.to_le_bytes()).collect();
        let device = f32s(&run(&exe, &all, &input));
        let mut host = HostDevice::new();
        host.set(Region::Inputs, src.clone());
        host.set(Region::Arena, dst.clone());
        let (s, d) = (Span::new(Region::Inputs, 0, len), Span::new(Region::Arena, 0, len));
        host.add_scaled_into(d, s, len, scale).unwrap();
        assert_eq!(bits(&device), bits(host.get(Region::Arena)), "scale {scale}");
    }
}

/// NaN exactly where `cpu` has NaN, every other value within `tolerance` times the largest finite
/// magnitude of `cpu`.
fn assert_near_largest(cpu: &[f32], device: &[f32], tolerance: f32, what: &str) {
    assert!(
        cpu.iter().any(|v| v.is_nan()) && cpu.iter().any(|v| v.is_finite()),
        "{what}: NaN and finite values"
    );
    let largest = cpu.iter().filter(|v| v.is_finite()).fold(0.0f32, |m, v| m.max(v.abs()));
    for (k, (c, d)) in cpu.iter().zip(device).enumerate() {
        let ok = if c.is_nan() { d.is_nan() } else { (c - d).abs() <= tolerance * largest };
        assert!(ok, "{what}: value {k}: cpu {c}, device {d}");
    }
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// A line on the real stderr: libtest captures `eprintln!` of passing tests, and a skip must be seen.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// update.cu's fold of the parameters into their moving average against `Ema::update`, bit for bit:
/// the warm-up decays of the first updates and the fixed one after, over values of mixed scale.
#[test]
fn device_average_fold_equals_the_cpus_bit_for_bit() {
    let Some(exe) = harness() else { return };
    let len = 1000;
    let params: Vec<f32> = values(31, len).map(|u| ((u - 0.5) * 10.0) as f32).collect();
    let start: Vec<f32> = values(37, len).map(|u| ((u - 0.5) * 1e-3) as f32).collect();
    let mut ema = dp_runtime::trainer::ema::Ema::new(0.999, &start).unwrap();
    let mut device = start.clone();
    for update in 0..5 {
        let stepped: Vec<f32> = params.iter().map(|p| p * (1.0 + update as f32)).collect();
        let decay = ema.next_decay();
        ema.update(&stepped);
        let args: Vec<String> = ["emafold".to_string(), format!("{decay:e}"), len.to_string()].into();
        let input: Vec<u8> = device.iter().chain(&stepped).flat_map(|x| x.to_le_bytes()).collect();
        device = f32s(&run(&exe, &args, &input));
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&device), bits(ema.average()), "update {update} (decay {decay})");
    }
}

/// update.cu's Adam coordinate against `Adam::step` on `NoisyGradient::with_drawn_noise`, bit for bit:
/// Adam with and without L2 decay and AdamW, PyTorch's betas and others, the first update (moments at
/// zero) and a later one (moments and update count loaded as from a checkpoint), the bias corrections
/// taken from `Adam::bias_corrections` as the device takes them.
#[test]
fn device_noisy_adam_update_equals_the_cpus_bit_for_bit() {
    let Some(exe) = harness() else { return };
    let len = 1000;
    let params: Vec<f32> = values(13, len).map(|u| (u - 0.5) as f32).collect();
    let exp_avg: Vec<f32> = values(17, len).map(|u| (u - 0.5) as f32 * 0.01).collect();
    let exp_avg_sq: Vec<f32> = values(19, len).map(|u| (u * u) as f32 * 1e-3).collect();
    let mut sum: Vec<f32> = values(23, len).map(|u| ((u - 0.5) * 40.0) as f32).collect();
    // A zero gradient where the moments are zero too: the update divides 0 by ε alone.
    sum[0] = 0.0;
    let z: Vec<f64> = values(29, len).map(|u| (u - 0.5) * 6.0).collect();
    let (noise_std, batch, lr) = (1.1 * 0.7, 256.0, 0.003);
    let z_of = |i: usize| if i == 0 { 0.0 } else { z[i] };
    let z: Vec<f64> = (0..len).map(z_of).collect();
    for (decoupled, weight_decay, (beta1, beta2), eps) in [
        (false, 0.0, (0.9, 0.999), 1e-8),
        (false, 1e-2, (0.8, 0.99), 1e-6),
        (true, 1e-2, (0.9, 0.999), 1e-8),
        (true, 0.1, (0.5, 0.9), 1e-3),
    ] {
        for update in [1u64, 5] {
            let adam = match decoupled {
                true => Adam::adamw(lr, weight_decay),
                false => Adam::new(lr).weight_decay(weight_decay),
            };
            let mut adam = adam.betas(beta1, beta2).eps(eps);
            let (m, v) = match update {
                1 => (vec![0.0f32; len], vec![0.0f32; len]),
                _ => {
                    // The moments and count the device starts from, as a checkpoint gives them.
                    let state = dp_runtime::optim::OptimizerState {
                        kind: adam.kind().into(),
                        updates: update - 1,
                        buffers: vec![
                            ("exp_avg".into(), exp_avg.clone()),
                            ("exp_avg_sq".into(), exp_avg_sq.clone()),
                        ],
                    };
                    adam.load_state(state, len).unwrap();
                    (exp_avg.clone(), exp_avg_sq.clone())
                }
            };
            let mut cpu_params = params.clone();
            let at = StepInfo { step: 0, total_steps: 10 };
            adam.step(&mut cpu_params, NoisyGradient::with_drawn_noise(&sum, &z, noise_std, batch), at);
            let cpu_state = adam.state();
            let buffer = |name: &str| cpu_state.buffers.iter().find(|(n, _)| n == name).unwrap().1.clone();

            let (correction1, root_correction2) = Adam::bias_corrections(beta1, beta2, update);
            let args: Vec<String> = [
                "adam".to_string(),
                format!("{noise_std:e}"),
                format!("{:e}", 1.0 / batch),
                format!("{lr:e}"),
                format!("{beta1:e}"),
                format!("{beta2:e}"),
                format!("{eps:e}"),
                format!("{weight_decay:e}"),
                (decoupled as u8).to_string(),
                format!("{correction1:e}"),
                format!("{root_correction2:e}"),
                len.to_string(),
            ]
            .into();
            let input: Vec<u8> = params
                .iter()
                .chain(&m)
                .chain(&v)
                .chain(&sum)
                .flat_map(|x| x.to_le_bytes())
                .chain(z.iter().flat_map(|x| x.to_le_bytes()))
                .collect();
            let out = f32s(&run(&exe, &args, &input));
            let (device_params, rest) = out.split_at(len);
            let (device_m, device_v) = rest.split_at(len);
            let case = format!(
                "decoupled {decoupled} wd {weight_decay} betas {beta1} {beta2} eps {eps} update {update}"
            );
            for (what, cpu, device) in [
                ("parameters", cpu_params.clone(), device_params),
                ("exp_avg", buffer("exp_avg"), device_m),
                ("exp_avg_sq", buffer("exp_avg_sq"), device_v),
            ] {
                let differing: Vec<usize> =
                    (0..len).filter(|&i| cpu[i].to_bits() != device[i].to_bits()).collect();
                assert!(
                    differing.is_empty(),
                    "{case}: {} {what} differ, the first at {}: cpu {}, device {}",
                    differing.len(),
                    differing[0],
                    cpu[differing[0]],
                    device[differing[0]]
                );
            }
            assert_eq!(cpu_state.updates, update, "{case}");
            assert_ne!(bits(&cpu_params), bits(&params), "{case}: the update moved the parameters");
        }
    }
}

/// One example's views on the CPU (`dp-runtime/src/trainer/views.rs`): the gradient sum times 1/K in
/// f32, each range's squares summed in f64, rounded to f32 and added into its group's, the clip
/// factors, and the clipped average added into `sum` unless a norm is not finite. The average, the
/// squared norms, the factors and the count of invalid examples.
fn views_example_on_cpu(
    gradient_sum: &[f32],
    views: usize,
    ranges: &[(usize, usize, usize)],
    groups: usize,
    mode: ClipMode,
    clip_norm: f64,
    sum: &mut [f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>, usize) {
    let inverse = 1.0 / views as f32;
    let average: Vec<f32> = gradient_sum.iter().map(|&g| g * inverse).collect();
    let mut sq_norms = vec![0.0f32; groups];
    for &(offset, len, group) in ranges {
        let squares: f64 = average[offset..offset + len].iter().map(|&g| g as f64 * g as f64).sum();
        sq_norms[group] += squares as f32;
    }
    let mut factors = vec![0.0f32; groups];
    let bad = clip_factors(mode, clip_norm, groups, &sq_norms, &mut factors).unwrap();
    if bad == 0 {
        for &(offset, len, group) in ranges {
            for (s, &a) in sum[offset..offset + len].iter_mut().zip(&average[offset..offset + len]) {
                *s += a * factors[group];
            }
        }
    }
    (average, sq_norms, factors, bad)
}

/// The same value, bit for bit, or both NaN.
fn same_bits(what: &str, device: &[f32], cpu: &[f32]) {
    assert_eq!(device.len(), cpu.len(), "{what}: lengths");
    for (k, (d, c)) in device.iter().zip(cpu).enumerate() {
        assert!(d.to_bits() == c.to_bits() || (d.is_nan() && c.is_nan()), "{what}[{k}]: device {d}, CPU {c}");
    }
}

/// views.cu's per-value functions (one sequential sum per range in place of the blocks') with clip.cu's
/// factors, against the CPU's arithmetic of an example with views, bit for bit: flat and per-layer,
/// two ranges in one group, views 1, 3 and 4, gradients clipped and not, and non-finite ones (NaN,
/// infinite, squares past f32's range) that leave the sum exactly as it was.
#[test]
fn device_views_arithmetic_equals_the_cpus_bit_for_bit() {
    let Some(exe) = harness() else { return };
    let ranges = [(0, 7, 0), (7, 5, 1), (12, 9, 0), (21, 30, 2)];
    let (len, groups) = (51, 3);
    let mut seed = 90;
    let mut clipped_some = false;
    for mode in [ClipMode::Flat, ClipMode::PerLayer] {
        for views in [1, 3, 4] {
            for (scale, poison) in [
                (0.05, None),
                (3.0, None),
                (1.0, Some(f32::NAN)),
                (1.0, Some(f32::INFINITY)),
                (1.0, Some(1e20)),
            ] {
                seed += 1;
                let mut gradient_sum: Vec<f32> =
                    values(seed, len).map(|v| ((v - 0.5) * scale * views as f64) as f32).collect();
                if let Some(bad) = poison {
                    gradient_sum[23] = bad;
                }
                let sum: Vec<f32> = values(seed + 1000, len).map(|v| (v - 0.5) as f32).collect();
                let mut cpu_sum = sum.clone();
                let (average, sq_norms, factors, bad) =
                    views_example_on_cpu(&gradient_sum, views, &ranges, groups, mode, 1.0, &mut cpu_sum);
                clipped_some |= bad == 0 && factors.iter().any(|&f| f < 1.0);
                let per_layer = usize::from(matches!(mode, ClipMode::PerLayer));
                let mut input: Vec<u8> = gradient_sum.iter().flat_map(|v| v.to_le_bytes()).collect();
                for field in 0..3 {
                    let value = |r: &(usize, usize, usize)| [r.0, r.1, r.2][field] as u64;
                    input.extend(ranges.iter().flat_map(|r| value(r).to_le_bytes()));
                }
                input.extend(sum.iter().flat_map(|v| v.to_le_bytes()));
                let args: Vec<String> = ["views", &views.to_string(), &len.to_string(), "4", "3"]
                    .iter()
                    .map(|s| s.to_string())
                    .chain([per_layer.to_string(), "1".to_string()])
                    .collect();
                let out = run(&exe, &args, &input);
                let floats = f32s(&out[..(len + 2 * groups) * 4]);
                let device_bad = u32::from_le_bytes(out[(len + 2 * groups) * 4..][..4].try_into().unwrap());
                let device_sum = f32s(&out[(len + 2 * groups) * 4 + 4..]);
                let what = format!("{mode:?} views {views} scale {scale} poison {poison:?}");
                same_bits(&format!("{what}: average"), &floats[..len], &average);
                same_bits(&format!("{what}: squared norms"), &floats[len..len + groups], &sq_norms);
                same_bits(&format!("{what}: factors"), &floats[len + groups..], &factors);
                assert_eq!(device_bad as usize, bad, "{what}: invalid count");
                assert_eq!(
                    bad,
                    usize::from(poison.is_some()),
                    "{what}: the poison makes the example invalid"
                );
                same_bits(&format!("{what}: clipped sum"), &device_sum, &cpu_sum);
                if poison.is_some() {
                    same_bits(&format!("{what}: untouched sum"), &device_sum, &sum);
                }
            }
        }
    }
    assert!(clipped_some, "no example was clipped");
}

// bf16 storage (docs/GPU.md, "bf16 storage"): each kernel file's operations with their buffers held
// in bf16, against the host reference storing in bf16.
#[path = "kernels_on_host/attention_transformer_bf16.rs"]
mod attention_transformer_bf16;
#[path = "kernels_on_host/conv_bf16.rs"]
mod conv_bf16;
#[path = "kernels_on_host/dense_bf16.rs"]
mod dense_bf16;
#[path = "kernels_on_host/lstm_recurrence.rs"]
mod lstm_recurrence;
#[path = "kernels_on_host/norm_sequence_lstm_bf16.rs"]
mod norm_sequence_lstm_bf16;
/// The host reference storing in bf16 and the comparisons the bf16 tests share.
#[path = "kernels_on_host/stored.rs"]
mod stored;
