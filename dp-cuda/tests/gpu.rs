//! The kernels on a GPU against the CPU. Marked `#[ignore]`, so `cargo test` lists them as ignored
//! (with the reason) instead of passing them; scripts/gpu/check.sh runs them with `--include-ignored`
//! and `DP_REQUIRE_GPU`, which turns a missing device into a failure. Run by hand without a device,
//! each says `1 GPU test skipped: no CUDA device` and checks nothing. They passed on an NVIDIA H200
//! (2026-12-04; docs/GPU.md).

use dp_cuda::device::{self, Gpu, SgdState, SgdStep};
use dp_cuda::program::{Bf16Layout, GpuOps, RegionMemory};
use dp_kernels::activation::Activation;
use dp_runtime::clipping::{clip_factors, ClipMode};
use dp_runtime::device::host::HostDevice;
use dp_runtime::device::{
    BatchedGemm, Conv2dGeometry, DeviceError, DeviceOps, Gemm, GroupNormDims, LeadingDims, LstmBackwardStep,
    LstmDims, LstmForwardStep, LstmSaved, Operands, PatchDims, Pool2dGeometry, Precision, Region, Span,
    Stored,
};
use dp_runtime::noise::gaussian::fill_chunk;
use dp_runtime::optim::{NoisyGradient, Optimizer, OptimizerState, Sgd, StepInfo};

fn gpu(test: &str) -> Option<Gpu> {
    if device::device_count() == 0 {
        assert!(
            std::env::var_os("DP_REQUIRE_GPU").is_none(),
            "DP_REQUIRE_GPU is set but no CUDA device is present"
        );
        say(&format!("1 GPU test skipped: no CUDA device ({test})"));
        return None;
    }
    let gpu = Gpu::open(0).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("testing on {}", gpu.describe());
    Some(gpu)
}

fn xorshift(seed: u64, n: usize) -> Vec<f64> {
    let mut state = seed | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        })
        .collect()
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_noise_equals_the_cpu_draw() {
    let Some(gpu) = gpu("noise") else { return };
    // Several retry segments, a short last one in a chunk of several (2·CHUNK + 5·SEGMENT + 77) and in
    // a vector of many (3,000,017: last chunk 1,745 long), and a last retry block with idle warps.
    use dp_cuda::noise::{CHUNK, SEGMENT};
    for len in [1, 129, CHUNK, 2 * CHUNK + 5 * SEGMENT + 77, 3_000_017] {
        let key: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(29).wrapping_add(len as u8));
        let device = gpu.standard_normals(&key, len).unwrap();
        let mut cpu = vec![0.0; len];
        for (chunk, values) in cpu.chunks_mut(CHUNK).enumerate() {
            fill_chunk(&key, chunk as u64, values);
        }
        // The common case is exact arithmetic; the wedge and tail call exp and log, whose last bit
        // may differ between CUDA's libdevice and the host's libm.
        let mut inexact = 0;
        for (i, (c, d)) in cpu.iter().zip(&device).enumerate() {
            if c.to_bits() != d.to_bits() {
                inexact += 1;
                assert!((c - d).abs() <= 1e-14 * c.abs().max(1.0), "coordinate {i}: cpu {c}, gpu {d}");
            }
        }
        assert!(inexact * 1000 <= len, "{inexact} of {len} coordinates differ in their last bits");
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_clip_factors_equal_the_cpus() {
    let Some(gpu) = gpu("clip factors") else { return };
    for batch in [1, 7, 256, 1_000] {
        for (mode, groups) in [(ClipMode::Flat, 1), (ClipMode::Flat, 4), (ClipMode::PerLayer, 4)] {
            let special = [f32::NAN, f32::INFINITY, -1.0, 0.0, f32::MAX];
            let sq: Vec<f32> = xorshift(batch as u64, batch * groups)
                .iter()
                .enumerate()
                .map(
                    |(i, u)| {
                        if i % 31 == 30 {
                            special[i / 31 % 5]
                        } else {
                            10f64.powf(u * 8.0 - 4.0) as f32
                        }
                    },
                )
                .collect();
            let mut cpu = vec![0.0; sq.len()];
            let cpu_bad = clip_factors(mode, 1.0, groups, &sq, &mut cpu).unwrap();
            let (device, device_bad) = gpu.clip_factors(mode, 1.0, groups, &sq).unwrap();
            assert_eq!(device_bad, cpu_bad);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&device), bits(&cpu), "{mode:?} G={groups} B={batch}");
        }
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_noisy_sgd_update_equals_the_cpus() {
    let Some(gpu) = gpu("noisy SGD update") else { return };
    let len = 100_003;
    let params: Vec<f32> = xorshift(3, len).iter().map(|u| (u - 0.5) as f32).collect();
    let velocity: Vec<f32> = xorshift(5, len).iter().map(|u| (u - 0.5) as f32 * 0.1).collect();
    let sum: Vec<f32> = xorshift(7, len).iter().map(|u| ((u - 0.5) * 40.0) as f32).collect();
    let z: Vec<f64> = xorshift(11, len).iter().map(|u| (u - 0.5) * 6.0).collect();
    for (momentum, nesterov, first) in [(0.0, false, true), (0.9, false, true), (0.9, true, false)] {
        let mut sgd = Sgd::new(0.1).momentum(momentum).nesterov(nesterov).weight_decay(1e-4);
        if !first {
            let buffers = vec![("momentum".to_string(), velocity.clone())];
            sgd.load_state(OptimizerState { kind: "sgd".into(), updates: 1, buffers }, len).unwrap();
        }
        let mut cpu = params.clone();
        let at = StepInfo { step: 0, total_steps: 1 };
        sgd.step(&mut cpu, NoisyGradient::with_drawn_noise(&sum, &z, 0.77, 256.0), at);
        let (mut device, mut device_velocity) = (params.clone(), velocity.clone());
        let state = SgdState { params: &mut device, velocity: &mut device_velocity, sum: &sum, z: &z };
        let step = SgdStep {
            noise_std: 0.77,
            inverse_batch: 1.0 / 256.0,
            lr: 0.1,
            momentum,
            weight_decay: 1e-4,
            first,
            nesterov,
        };
        gpu.sgd_noisy_update(state, step).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&device), bits(&cpu), "momentum {momentum} nesterov {nesterov}");
    }
}

/// Runs `call` on the host reference and on the GPU over the same regions (each one region's
/// contents); region `out` of each afterwards, host first.
fn on_both(
    gpu: &Gpu,
    regions: &[(Region, Vec<f32>)],
    out: Region,
    call: impl Fn(&mut dyn DeviceOps) -> Result<(), DeviceError>,
) -> (Vec<f32>, Vec<f32>) {
    on_both_in(Precision::F32, gpu, regions, out, call)
}

/// [`on_both`] with both devices' marked products in `precision`.
fn on_both_in(
    precision: Precision,
    gpu: &Gpu,
    regions: &[(Region, Vec<f32>)],
    out: Region,
    call: impl Fn(&mut dyn DeviceOps) -> Result<(), DeviceError>,
) -> (Vec<f32>, Vec<f32>) {
    let mut host = HostDevice::new();
    host.set_precision(precision);
    for (region, values) in regions {
        host.set(*region, values.clone());
    }
    call(&mut host).unwrap_or_else(|e| panic!("host: {e}"));
    let len = |r: Region| regions.iter().find(|(q, _)| *q == r).map_or(0, |(_, v)| v.len());
    let mut memory = RegionMemory::new(gpu, len).unwrap();
    for (region, values) in regions {
        memory.upload(gpu, *region, values).unwrap();
    }
    call(&mut GpuOps::new(gpu, &memory, precision)).unwrap_or_else(|e| panic!("gpu: {e}"));
    let device = memory.download(gpu, out).unwrap();
    (host.get(out).to_vec(), device[..len(out)].to_vec())
}

fn uniform(seed: u64, n: usize) -> Vec<f32> {
    xorshift(seed, n).iter().map(|u| (u - 0.5) as f32).collect()
}

/// The values' bits, every NaN as one (a GPU's arithmetic gives its own NaN, not the operand's).
fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| if x.is_nan() { f32::NAN.to_bits() } else { x.to_bits() }).collect()
}

/// Every value within `tolerance · (1 + |host|)` of the host's (NaN where the host has NaN).
fn assert_near(host: &[f32], device: &[f32], tolerance: f32, what: &str) {
    assert_eq!(host.len(), device.len(), "{what}");
    for (k, (h, d)) in host.iter().zip(device).enumerate() {
        let ok = if h.is_nan() { d.is_nan() } else { (h - d).abs() <= tolerance * (1.0 + h.abs()) };
        assert!(ok, "{what}: value {k}: host {h}, gpu {d}");
    }
}

/// The convolution primitives of `DeviceOps` on the GPU against the host reference: im2col and col2im
/// bit for bit (padding, stride, dilation, rectangular kernels, a batch past the grid's first sweep,
/// two groups and a group per channel: the whole image's patches either way), im2col with the batch
/// folded into the columns and an output's examples laid side by side, with and without clip factors
/// (a factor of 0 over a NaN example giving 0; in bf16 the others rounded before they are scaled;
/// since 2026-12-05, NOT YET RUN),
/// the channel epilogue, and a group count that does not divide the channels refused.
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_im2col_col2im_and_the_channel_epilogue_equal_the_host_reference() {
    let Some(gpu) = gpu("im2col, col2im, channel bias and activation") else { return };
    let g = |in_c, in_h, in_w, kh, kw, stride, padding, dilation| Conv2dGeometry {
        in_c,
        in_h,
        in_w,
        out_c: 8,
        kh,
        kw,
        stride,
        padding,
        dilation,
        groups: 1,
    };
    for (geom, n) in [
        (g(1, 28, 28, 5, 5, 1, 0, 1), 256),
        (g(3, 9, 7, 3, 3, 1, 1, 1), 5),
        (g(2, 11, 10, 3, 2, 2, 1, 1), 5),
        (g(2, 12, 9, 3, 3, 2, 2, 2), 5),
        (g(16, 14, 14, 5, 5, 2, 2, 1), 33),
        (Conv2dGeometry { groups: 2, ..g(4, 8, 8, 3, 3, 2, 1, 1) }, 5),
        (Conv2dGeometry { groups: 8, ..g(8, 10, 10, 3, 3, 1, 1, 1) }, 7),
    ] {
        let (inputs, patches) = (n * geom.input_len(), n * geom.patches_len());
        let x = uniform(geom.in_h as u64 + 1, inputs);
        let regions = [(Region::Inputs, x), (Region::Arena, vec![f32::NAN; patches])];
        let (host, device) = on_both(&gpu, &regions, Region::Arena, |ops| {
            ops.im2col(Span::new(Region::Inputs, 0, inputs), &geom, n, Span::new(Region::Arena, 0, patches))
        });
        assert_eq!(bits(&host), bits(&device), "im2col {geom:?}");
        let cols = uniform(geom.in_w as u64 + 3, patches);
        let regions = [(Region::Inputs, cols), (Region::Arena, vec![f32::NAN; inputs])];
        let (host, device) = on_both(&gpu, &regions, Region::Arena, |ops| {
            ops.col2im(Span::new(Region::Inputs, 0, patches), &geom, n, Span::new(Region::Arena, 0, inputs))
        });
        assert_eq!(bits(&host), bits(&device), "col2im {geom:?}");
        // Without factors, and with a factor of 0 (over a NaN input) and others for the clipped sum's.
        let mut x = uniform(geom.in_h as u64 + 5, inputs);
        x[0] = f32::NAN;
        let (groups, group) = (2, 1);
        let factors: Vec<f32> =
            (0..n * groups).map(|k| if k == group { 0.0 } else { 0.25 + k as f32 / 7.0 }).collect();
        let (rows, outputs) = (geom.out_c, n * geom.output_len());
        let mut dy = uniform(geom.kh as u64 + 7, outputs);
        dy[1] = f32::NAN;
        for (weighted, precision) in
            [(false, Precision::F32), (true, Precision::F32), (true, Precision::Bf16)]
        {
            let f = weighted.then_some((Span::new(Region::Factors, 0, n * groups), groups, group));
            let regions = [
                (Region::Inputs, x.clone()),
                (Region::Arena, vec![f32::NAN; patches]),
                (Region::Factors, factors.clone()),
            ];
            let (host, device) = on_both_in(precision, &gpu, &regions, Region::Arena, |ops| {
                let (x, cols) = (Span::new(Region::Inputs, 0, inputs), Span::new(Region::Arena, 0, patches));
                ops.im2col_folded(x, &geom, n, f, cols)
            });
            assert_eq!(
                bits(&host),
                bits(&device),
                "im2col_folded {geom:?}, factors {weighted}, {precision:?}"
            );
            let regions = [
                (Region::Inputs, dy.clone()),
                (Region::Arena, vec![f32::NAN; outputs]),
                (Region::Factors, factors.clone()),
            ];
            let (host, device) = on_both_in(precision, &gpu, &regions, Region::Arena, |ops| {
                let (src, dst) =
                    (Span::new(Region::Inputs, 0, outputs), Span::new(Region::Arena, 0, outputs));
                ops.fold_examples(src, (n, rows, geom.positions()), f, dst)
            });
            assert_eq!(
                bits(&host),
                bits(&device),
                "fold_examples {geom:?}, factors {weighted}, {precision:?}"
            );
        }
    }
    let indivisible = Conv2dGeometry { groups: 3, ..g(4, 8, 8, 3, 3, 1, 1, 1) };
    let memory = RegionMemory::new(&gpu, |_| 10_000).unwrap();
    let refused = GpuOps::new(&gpu, &memory, Precision::F32).im2col(
        Span::new(Region::Inputs, 0, 256),
        &indivisible,
        1,
        Span::new(Region::Arena, 0, 10_000),
    );
    assert!(matches!(refused, Err(DeviceError::Mismatch(_))), "{refused:?}");

    let (n, channels, positions) = (37, 12, 49);
    let len = n * channels * positions;
    for act in
        [Activation::Identity, Activation::Relu, Activation::Tanh, Activation::Sigmoid, Activation::Gelu]
    {
        for with_bias in [true, false] {
            let regions = [(Region::Arena, uniform(5, len)), (Region::Params, uniform(6, channels))];
            let (host, device) = on_both(&gpu, &regions, Region::Arena, |ops| {
                let bias = with_bias.then_some(Span::new(Region::Params, 0, channels));
                ops.channel_bias_activation(
                    Span::new(Region::Arena, 0, len),
                    bias,
                    n,
                    channels,
                    positions,
                    act,
                )
            });
            let what = format!("channel_bias_activation {act:?} bias {with_bias}");
            if matches!(act, Activation::Identity | Activation::Relu) {
                assert_eq!(bits(&host), bits(&device), "{what}");
            } else {
                assert_near(&host, &device, 1e-6, &what);
            }
        }
    }
}

/// Strided batched products against the host's loop of products: a weight shared by the batch
/// (stride 0), every transpose, overwrite and accumulate, and a shared output the batch accumulates
/// into (products one after another).
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_batched_products_equal_the_host_reference() {
    let Some(gpu) = gpu("batched products") else { return };
    let (m, n, k, batch) = (6, 49, 25, 7);
    for (a_transposed, b_transposed) in [(false, false), (true, false), (false, true), (true, true)] {
        for accumulate in [false, true] {
            for (stride_a, stride_c) in [(0, m * n), (m * k, m * n), (m * k, 0)] {
                let stride_b = k * n;
                let a_len = (batch - 1) * stride_a + m * k;
                let c_len = (batch - 1) * stride_c + m * n;
                let b_len = batch * stride_b;
                let regions = [
                    (Region::Params, uniform(1, a_len)),
                    (Region::Arena, uniform(2, b_len)),
                    (Region::Grad, uniform(3, c_len)),
                ];
                let product = BatchedGemm {
                    gemm: Gemm {
                        m,
                        n,
                        k,
                        a: Span::new(Region::Params, 0, a_len),
                        a_transposed,
                        b: Span::new(Region::Arena, 0, b_len),
                        b_transposed,
                        c: Span::new(Region::Grad, 0, c_len),
                        accumulate,
                        operands: Operands::OfPrecision,
                    },
                    batch,
                    stride_a,
                    stride_b,
                    stride_c,
                };
                let (host, device) = on_both(&gpu, &regions, Region::Grad, |ops| ops.gemm_batched(product));
                assert_near(&host, &device, 1e-5, &format!("{product:?}"));
            }
        }
    }
}

/// Products in bf16: a product marked `OfPrecision` runs on the tensor cores with bf16 operands
/// (`CUBLAS_COMPUTE_32F_FAST_16BF`) and lands near the host's product of the operands rounded to
/// bf16 — and measurably away from the f32 product, so the tensor-core path did run; one marked `F32`
/// is the f32 product in either precision. Single and strided batched, every transpose.
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_bf16_products_round_only_the_products_marked_to() {
    let Some(gpu) = gpu("bf16 products") else { return };
    let (m, n, k, batch) = (96, 160, 288, 3);
    for (a_transposed, b_transposed) in [(false, false), (true, false), (false, true), (true, true)] {
        let regions = [
            (Region::Params, uniform(11, m * k)),
            (Region::Arena, uniform(12, batch * k * n)),
            (Region::Grad, uniform(13, batch * m * n)),
        ];
        let gemm = |operands| Gemm {
            m,
            n,
            k,
            a: Span::new(Region::Params, 0, m * k),
            a_transposed,
            b: Span::new(Region::Arena, 0, batch * k * n),
            b_transposed,
            c: Span::new(Region::Grad, 0, batch * m * n),
            accumulate: true,
            operands,
        };
        let batched = |operands| BatchedGemm {
            gemm: gemm(operands),
            batch,
            stride_a: 0,
            stride_b: k * n,
            stride_c: m * n,
        };
        let what = format!("transposes {a_transposed} {b_transposed}");
        let single = |precision, operands| {
            on_both_in(precision, &gpu, &regions, Region::Grad, |ops| ops.gemm(gemm(operands)))
        };
        let many = |precision, operands| {
            on_both_in(precision, &gpu, &regions, Region::Grad, |ops| ops.gemm_batched(batched(operands)))
        };
        for run in [&single as &dyn Fn(Precision, Operands) -> (Vec<f32>, Vec<f32>), &many] {
            let (f32_host, f32_gpu) = run(Precision::F32, Operands::OfPrecision);
            assert_near(&f32_host, &f32_gpu, 1e-5, &format!("f32 {what}"));
            let (kept_host, kept_gpu) = run(Precision::Bf16, Operands::F32);
            assert_near(&kept_host, &f32_host, 0.0, &format!("F32 marked, host {what}"));
            assert_near(&kept_gpu, &f32_host, 1e-5, &format!("F32 marked, gpu {what}"));
            let (bf16_host, bf16_gpu) = run(Precision::Bf16, Operands::OfPrecision);
            assert_near(&bf16_host, &bf16_gpu, 1e-4, &format!("bf16 {what}"));
            let moved = bf16_gpu.iter().zip(&f32_host).map(|(b, f)| (b - f).abs()).fold(0.0f32, f32::max);
            assert!(moved > 1e-3, "bf16 {what}: the product is the f32 one (largest difference {moved})");
        }
    }
}

/// Products storing in bf16 (docs/GPU.md, "bf16 storage") against the host reference storing in
/// bf16, for every mix of stored types cuBLAS cannot take as they are: A the parameters (f32), an f32
/// arena buffer or a bf16 one; B an f32 or bf16 arena buffer; C a bf16 arena buffer or the gradient
/// (f32); both marks, accumulating, one product and a strided batch. An operand of the other type
/// is converted into its slot (rounded exactly as the host rounds, widened exactly), so an f32 output
/// agrees to accumulation order (1e-4) and a bf16 output to a bf16 step or two where the order tips a
/// rounding (2⁻⁷·(1 + |host|)). On the GPU each span's slot in the store it is not stored in holds NaN,
/// so a conversion skipped (or the product reading the wrong store) shows as NaN.
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_products_storing_bf16_multiply_what_the_host_reference_multiplies() {
    let Some(gpu) = gpu("products storing bf16") else { return };
    let (m, n, k, batch) = (48, 80, 144, 3);
    let (a_len, b_len, c_len) = (m * k, batch * k * n, batch * m * n);
    // Arena layout: A's buffer, B's buffer, C's buffer, apart.
    let (a_at, b_at, c_at) = (0, a_len, a_len + b_len);
    let arena = uniform(21, a_len + b_len + c_len);
    let params = uniform(22, a_len);
    let grad = uniform(23, c_len);
    let mut checked = 0;
    for a_kind in ["params", "arena f32", "arena bf16"] {
        for b_bf16 in [false, true] {
            for c_bf16 in [false, true] {
                for operands in [Operands::OfPrecision, Operands::F32] {
                    for batched in [false, true] {
                        let a = match a_kind {
                            "params" => Span::new(Region::Params, 0, a_len),
                            "arena f32" => Span::new(Region::Arena, a_at, a_len),
                            _ => Span::new(Region::Arena, a_at, a_len).of_precision(),
                        };
                        let b = Span::new(Region::Arena, b_at, b_len);
                        let b = if b_bf16 { b.of_precision() } else { b };
                        let c = if c_bf16 {
                            Span::new(Region::Arena, c_at, c_len).of_precision()
                        } else {
                            Span::new(Region::Grad, 0, c_len)
                        };
                        let g = Gemm {
                            m,
                            n,
                            k,
                            a,
                            a_transposed: false,
                            b,
                            b_transposed: batched,
                            c: if batched { c } else { c.sub(0, m * n) },
                            accumulate: true,
                            operands,
                        };
                        let call = |ops: &mut dyn DeviceOps| {
                            if batched {
                                ops.gemm_batched(BatchedGemm {
                                    gemm: g,
                                    batch,
                                    stride_a: 0,
                                    stride_b: k * n,
                                    stride_c: m * n,
                                })
                            } else {
                                ops.gemm(Gemm { b: b.sub(0, k * n), ..g })
                            }
                        };
                        let mut host = HostDevice::new();
                        host.set_precision(Precision::Bf16);
                        host.set_bf16_storage(true);
                        host.set(Region::Params, params.clone());
                        host.set(Region::Arena, arena.clone());
                        host.set(Region::Grad, grad.clone());
                        call(&mut host).unwrap();

                        let mut memory = RegionMemory::new(&gpu, |r| match r {
                            Region::Params => a_len,
                            Region::Arena => arena.len(),
                            Region::Grad => c_len,
                            _ => 1,
                        })
                        .unwrap();
                        // The f32 arena whole (these spans lie anywhere in it), conversion slots
                        // for any of them.
                        let layout = Bf16Layout { arena_f32: arena.len(), conversion_slot: arena.len() };
                        memory.store_bf16(&gpu, Some(layout)).unwrap();
                        memory.upload(&gpu, Region::Params, &params).unwrap();
                        // Each arena span's values in the store it lives in, NaN in the other.
                        let (mut in_f32, mut in_bf16) = (arena.clone(), arena.clone());
                        for s in [a, b, c] {
                            if s.region == Region::Arena {
                                let other = match s.stored {
                                    Stored::OfPrecision => &mut in_f32,
                                    Stored::F32 => &mut in_bf16,
                                };
                                other[s.offset..s.offset + s.len].fill(f32::NAN);
                            }
                        }
                        memory.upload(&gpu, Region::Arena, &in_f32).unwrap();
                        memory.upload_arena_bf16(&gpu, &in_bf16).unwrap();
                        memory.upload(&gpu, Region::Grad, &grad).unwrap();
                        call(&mut GpuOps::new(&gpu, &memory, Precision::Bf16)).unwrap();

                        let what = format!(
                            "A {a_kind}, B bf16 {b_bf16}, C bf16 {c_bf16}, {operands:?}, batched {batched}"
                        );
                        let len = g.c.len;
                        if c_bf16 {
                            let device = memory.download_arena_bf16(&gpu).unwrap().unwrap();
                            let host_c = host.arena_bf16()[c_at..c_at + len].to_vec();
                            assert_near(&host_c, &device[c_at..c_at + len], 1.0 / 128.0, &what);
                        } else {
                            let device = memory.download(&gpu, Region::Grad).unwrap();
                            assert_near(&host.get(Region::Grad)[..len], &device[..len], 1e-4, &what);
                        }
                        checked += 1;
                    }
                }
            }
        }
    }
    assert_eq!(checked, 48);
}

/// Row sums, kept norms and the kept weighted sum against the host reference (the sums within
/// rounding, the weighted sum bit for bit, factor-0 examples over NaN rows skipped).
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_row_sums_and_kept_gradients_equal_the_host_reference() {
    let Some(gpu) = gpu("row sums and kept gradients") else { return };
    for (rows, cols) in [(1000, 1), (1000, 49), (70_001, 784)] {
        let regions =
            [(Region::Arena, uniform(cols as u64, rows * cols)), (Region::Grad, vec![f32::NAN; rows])];
        let (host, device) = on_both(&gpu, &regions, Region::Grad, |ops| {
            ops.row_sums(
                Span::new(Region::Arena, 0, rows * cols),
                rows,
                cols,
                Span::new(Region::Grad, 0, rows),
            )
        });
        assert_near(&host, &device, 1e-5, &format!("row_sums {rows}x{cols}"));
    }
    let (n, weight_len, bias_len, groups, group) = (300, 12_800, 32, 3, 1);
    for with_bias in [true, false] {
        let regions = [
            (Region::Arena, uniform(7, n * (weight_len + bias_len))),
            (Region::SqNorms, vec![7.0; n * groups]),
        ];
        let (host, device) = on_both(&gpu, &regions, Region::SqNorms, |ops| {
            let bias =
                with_bias.then_some((Span::new(Region::Arena, n * weight_len, n * bias_len), bias_len));
            let weight = Span::new(Region::Arena, 0, n * weight_len);
            ops.kept_sq_norms(
                weight,
                weight_len,
                bias,
                n,
                Span::new(Region::SqNorms, 0, n * groups),
                groups,
                group,
            )
        });
        assert_near(&host, &device, 1e-5, &format!("kept_sq_norms bias {with_bias}"));
        assert!(
            device.iter().enumerate().all(|(k, v)| k % groups == group || *v == 7.0),
            "other groups kept"
        );
        // A ghost norm from two Gram matrices of 64 × 64 per example (since 2026-12-05, NOT YET RUN).
        let len = 64 * 64;
        let regions = [
            (Region::Arena, uniform(11, 2 * n * len + n * bias_len)),
            (Region::SqNorms, vec![7.0; n * groups]),
        ];
        let (host, device) = on_both(&gpu, &regions, Region::SqNorms, |ops| {
            let (a, b) = (Span::new(Region::Arena, 0, n * len), Span::new(Region::Arena, n * len, n * len));
            let bias = with_bias.then_some((Span::new(Region::Arena, 2 * n * len, n * bias_len), bias_len));
            ops.gram_sq_norms((a, b), len, bias, n, Span::new(Region::SqNorms, 0, n * groups), groups, group)
        });
        assert_near(&host, &device, 1e-5, &format!("gram_sq_norms bias {with_bias}"));
        assert!(
            device.iter().enumerate().all(|(k, v)| k % groups == group || *v == 7.0),
            "other groups kept"
        );
    }
    let (n, len) = (64, 12_800);
    let mut src = uniform(8, n * len);
    let mut factors: Vec<f32> = xorshift(9, n * groups).iter().map(|&u| u as f32).collect();
    for i in [3, 40] {
        factors[i * groups + group] = 0.0;
        src[i * len..(i + 1) * len].fill(f32::NAN);
    }
    for with_factors in [true, false] {
        let regions = [
            (Region::Arena, src.clone()),
            (Region::Factors, factors.clone()),
            (Region::Grad, uniform(10, len)),
        ];
        let (host, device) = on_both(&gpu, &regions, Region::Grad, |ops| {
            let f = with_factors.then_some((Span::new(Region::Factors, 0, n * groups), groups, group));
            ops.kept_weighted_sum(
                Span::new(Region::Arena, 0, n * len),
                n,
                len,
                f,
                Span::new(Region::Grad, 0, len),
            )
        });
        assert_eq!(bits(&host), bits(&device), "kept_weighted_sum factors {with_factors}");
        assert_eq!(device.iter().all(|v| v.is_finite()), with_factors);
    }
}

/// Max, average and global average pooling with their backwards against the host reference: max
/// pooling bit for bit with its argmax (ties, −∞, NaN), average pooling bit for bit, the global
/// average within rounding.
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_pooling_equals_the_host_reference() {
    let Some(gpu) = gpu("pooling") else { return };
    let g = |channels, in_h, in_w, kernel, stride, padding| Pool2dGeometry {
        channels,
        in_h,
        in_w,
        kernel,
        stride,
        padding,
    };
    for (geom, n) in [
        (g(16, 24, 24, 2, 2, 0), 256),
        (g(2, 7, 7, 3, 2, 1), 9),
        (g(1, 5, 6, 4, 3, 2), 9),
        (g(2, 9, 40, 3, 1, 1), 9),
    ] {
        let (inputs, outputs) = (n * geom.input_len(), n * geom.output_len());
        let x: Vec<f32> = (0..inputs)
            .map(|k| match k % 53 {
                5 => f32::NEG_INFINITY,
                11 => f32::NAN,
                _ => (k * 7919 % 5) as f32,
            })
            .collect();
        let regions = [(Region::Inputs, x), (Region::Arena, vec![f32::NAN; 2 * outputs])];
        let (host, device) = on_both(&gpu, &regions, Region::Arena, |ops| {
            let out = |from| Span::new(Region::Arena, from, outputs);
            ops.max_pool_forward(Span::new(Region::Inputs, 0, inputs), &geom, n, out(0), out(outputs))
        });
        assert_eq!(bits(&host), bits(&device), "max pool and argmax {geom:?}");
        let dy = uniform(11, outputs);
        let regions = [
            (Region::Inputs, [dy.as_slice(), &device[outputs..]].concat()),
            (Region::Arena, vec![f32::NAN; inputs]),
        ];
        let (host, device) = on_both(&gpu, &regions, Region::Arena, |ops| {
            let (dy, argmax) =
                (Span::new(Region::Inputs, 0, outputs), Span::new(Region::Inputs, outputs, outputs));
            ops.max_pool_backward(dy, argmax, &geom, n, Span::new(Region::Arena, 0, inputs))
        });
        assert_eq!(bits(&host), bits(&device), "max pool backward {geom:?}");

        let regions = [(Region::Inputs, uniform(12, inputs)), (Region::Arena, vec![f32::NAN; outputs])];
        let (host, device) = on_both(&gpu, &regions, Region::Arena, |ops| {
            ops.avg_pool_forward(
                Span::new(Region::Inputs, 0, inputs),
                &geom,
                n,
                Span::new(Region::Arena, 0, outputs),
            )
        });
        assert_eq!(bits(&host), bits(&device), "avg pool {geom:?}");
        let regions = [(Region::Inputs, dy.clone()), (Region::Arena, vec![f32::NAN; inputs])];
        let (host, device) = on_both(&gpu, &regions, Region::Arena, |ops| {
            ops.avg_pool_backward(
                Span::new(Region::Inputs, 0, outputs),
                &geom,
                n,
                Span::new(Region::Arena, 0, inputs),
            )
        });
        assert_eq!(bits(&host), bits(&device), "avg pool backward {geom:?}");
    }
    for (n, channels, plane) in [(256, 64, 49), (3, 5, 1), (7, 3, 1000)] {
        let planes = n * channels;
        let regions =
            [(Region::Inputs, uniform(13, planes * plane)), (Region::Arena, vec![f32::NAN; planes])];
        let (host, device) = on_both(&gpu, &regions, Region::Arena, |ops| {
            let x = Span::new(Region::Inputs, 0, planes * plane);
            ops.global_avg_pool_forward(x, n, channels, plane, Span::new(Region::Arena, 0, planes))
        });
        assert_near(&host, &device, 1e-5, &format!("global avg pool {n}x{channels}x{plane}"));
        let regions =
            [(Region::Inputs, uniform(14, planes)), (Region::Arena, vec![f32::NAN; planes * plane])];
        let (host, device) = on_both(&gpu, &regions, Region::Arena, |ops| {
            let dx = Span::new(Region::Arena, 0, planes * plane);
            ops.global_avg_pool_backward(Span::new(Region::Inputs, 0, planes), n, channels, plane, dx)
        });
        assert_near(&host, &device, 1e-6, &format!("global avg pool backward {n}x{channels}x{plane}"));
    }
}

/// Group norm forward and backward against the host reference (dp-kernels' CPU kernels): outputs,
/// statistics, input gradients and per-example affine gradients within 1e-4 of each one's largest
/// magnitude, NaN exactly where the host has NaN (a NaN input in one example, a NaN gradient in
/// another); groups of 4 channels over 1024-value planes, odd planes, planes of one value, and more
/// (example, group) units than the grid has blocks. Groups that do not divide the channels and a
/// short span are refused.
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_group_norm_equals_the_host_reference() {
    let Some(gpu) = gpu("group norm") else { return };
    for (channels, groups, plane, n) in [(16, 4, 1024, 128), (6, 3, 49, 7), (8, 1, 1, 3), (32, 32, 4, 4096)] {
        let dims = GroupNormDims { channels, plane, groups };
        let (len, stats, affine_len) = (n * dims.input_len(), n * groups, n * 2 * channels);
        let mut x: Vec<f32> =
            uniform(channels as u64 + plane as u64, len).iter().map(|u| 3.0 + 4.0 * u).collect();
        let mut dy = uniform(17, len);
        x[(n / 2) * dims.input_len() + dims.input_len() / 2] = f32::NAN;
        dy[(n - 1) * dims.input_len()] = f32::NAN;
        let weight: Vec<f32> = uniform(18, channels).iter().map(|u| 1.0 + u).collect();
        let case = format!("C={channels} G={groups} plane={plane} n={n}");

        let params = [weight.clone(), uniform(19, channels)].concat();
        let regions = [
            (Region::Inputs, x.clone()),
            (Region::Params, params),
            (Region::Arena, vec![f32::NAN; len + 2 * stats]),
        ];
        let (host, device) = on_both(&gpu, &regions, Region::Arena, |ops| {
            let out = |from, len| Span::new(Region::Arena, from, len);
            ops.group_norm_forward(
                Span::new(Region::Inputs, 0, len),
                &dims,
                n,
                Span::new(Region::Params, 0, channels),
                Span::new(Region::Params, channels, channels),
                out(0, len),
                out(len, stats),
                out(len + stats, stats),
            )
        });
        let (y, rest) = host.split_at(len);
        let (mean, rstd) = rest.split_at(stats);
        assert_near_largest(y, &device[..len], 1e-4, &format!("group norm y {case}"));
        assert_near_largest(mean, &device[len..len + stats], 1e-4, &format!("group norm mean {case}"));
        assert_near_largest(rstd, &device[len + stats..], 1e-4, &format!("group norm rstd {case}"));

        // The backward from the host's statistics.
        let inputs = [x, dy, mean.to_vec(), rstd.to_vec()].concat();
        let regions = [
            (Region::Inputs, inputs),
            (Region::Params, weight),
            (Region::Arena, vec![f32::NAN; len + affine_len]),
        ];
        let (host, device) = on_both(&gpu, &regions, Region::Arena, |ops| {
            let input = |from, len| Span::new(Region::Inputs, from, len);
            ops.group_norm_backward(
                input(0, len),
                input(len, len),
                Span::new(Region::Params, 0, channels),
                input(2 * len, stats),
                input(2 * len + stats, stats),
                &dims,
                n,
                Span::new(Region::Arena, 0, len),
                Span::new(Region::Arena, len, affine_len),
            )
        });
        assert_near_largest(&host[..len], &device[..len], 1e-4, &format!("group norm dx {case}"));
        assert_near_largest(&host[len..], &device[len..], 1e-4, &format!("group norm affine {case}"));
    }

    let memory = RegionMemory::new(&gpu, |_| 10_000).unwrap();
    let mut ops = GpuOps::new(&gpu, &memory, Precision::F32);
    let s = |region, len| Span::new(region, 0, len);
    for (dims, x_len) in [
        (GroupNormDims { channels: 6, plane: 10, groups: 4 }, 60),
        (GroupNormDims { channels: 6, plane: 10, groups: 3 }, 59),
    ] {
        let refused = ops.group_norm_forward(
            s(Region::Inputs, x_len),
            &dims,
            1,
            s(Region::Params, 6),
            s(Region::Params, 6),
            s(Region::Arena, 60),
            s(Region::Grad, 4),
            s(Region::SqNorms, 4),
        );
        assert!(matches!(refused, Err(DeviceError::Mismatch(_))), "{dims:?}: {refused:?}");
    }
}

/// [`on_both`] with token ids in the `Tokens` region.
fn on_both_with_tokens(
    gpu: &Gpu,
    ids: &[u32],
    regions: &[(Region, Vec<f32>)],
    out: Region,
    call: impl Fn(&mut dyn DeviceOps) -> Result<(), DeviceError>,
) -> (Vec<f32>, Vec<f32>) {
    let mut host = HostDevice::new();
    host.set_tokens(ids.to_vec());
    for (region, values) in regions {
        host.set(*region, values.clone());
    }
    call(&mut host).unwrap_or_else(|e| panic!("host: {e}"));
    let len = |r: Region| match r {
        Region::Tokens => ids.len(),
        _ => regions.iter().find(|(q, _)| *q == r).map_or(0, |(_, v)| v.len()),
    };
    let mut memory = RegionMemory::new(gpu, len).unwrap();
    let id_bits: Vec<f32> = ids.iter().map(|&v| f32::from_bits(v)).collect();
    memory.upload(gpu, Region::Tokens, &id_bits).unwrap();
    for (region, values) in regions {
        memory.upload(gpu, *region, values).unwrap();
    }
    call(&mut GpuOps::new(gpu, &memory, Precision::F32)).unwrap_or_else(|e| panic!("gpu: {e}"));
    let device = memory.download(gpu, out).unwrap();
    (host.get(out).to_vec(), device[..len(out)].to_vec())
}

/// The embedding over a sequence and the sums over time against the host reference, at the LSTM
/// model's sizes (256 positions, 100 columns, a vocabulary of 10,004): the gather bit for bit (an id
/// outside the vocabulary giving NaN), the token-grouped norms within rounding (examples whose ids
/// repeat many times, and examples that draw from the whole vocabulary), the
/// scatter-add within rounding (its adds are atomic) with factor-0 examples over NaN rows skipped,
/// the sums over time and their broadcast bit for bit. NOT YET RUN ON A GPU (docs/GPU.md).
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_sequence_primitives_equal_the_host_reference() {
    let Some(gpu) = gpu("sequence primitives") else { return };
    let (steps, vocab, dim, groups, group) = (256, 10_004, 100, 3, 2);
    for n in [1, 7, 300] {
        // Odd examples draw from 20 tokens (many repeats), even ones from the whole vocabulary.
        let ids: Vec<u32> = xorshift(n as u64, n * steps)
            .iter()
            .enumerate()
            .map(|(k, u)| (u * if (k / steps) % 2 == 1 { 20.0 } else { vocab as f64 }) as u32)
            .collect();
        let table = uniform(3, vocab * dim);
        let mut with_outside = ids.clone();
        with_outside[5] = vocab as u32;
        let regions = [(Region::Params, table.clone()), (Region::Arena, vec![0.0; n * steps * dim])];
        let (host, device) = on_both_with_tokens(&gpu, &with_outside, &regions, Region::Arena, |ops| {
            let (t, out) =
                (Span::new(Region::Params, 0, vocab * dim), Span::new(Region::Arena, 0, n * steps * dim));
            ops.embedding_forward(Span::new(Region::Tokens, 0, n * steps), t, n, steps, vocab, dim, out)
        });
        assert_eq!(bits(&host), bits(&device), "embedding_forward n={n}");
        assert!(device[5 * dim..6 * dim].iter().all(|v| v.is_nan()));

        let mut delta = uniform(4, n * steps * dim);
        let regions = [(Region::Arena, delta.clone()), (Region::SqNorms, vec![7.0; n * groups])];
        let (host, device) = on_both_with_tokens(&gpu, &ids, &regions, Region::SqNorms, |ops| {
            let (d, sq) =
                (Span::new(Region::Arena, 0, n * steps * dim), Span::new(Region::SqNorms, 0, n * groups));
            ops.embedding_norms(Span::new(Region::Tokens, 0, n * steps), d, n, steps, dim, sq, groups, group)
        });
        assert_near(&host, &device, 1e-5, &format!("embedding_norms n={n}"));
        assert!(
            device.iter().enumerate().all(|(k, v)| k % groups == group || *v == 7.0),
            "other groups kept"
        );

        let mut factors: Vec<f32> = xorshift(5, n * groups).iter().map(|&u| u as f32).collect();
        factors[(n - 1) * groups + group] = 0.0;
        delta[(n - 1) * steps * dim..].fill(f32::NAN);
        for with_factors in [true, false] {
            let delta: Vec<f32> = match with_factors {
                true => delta.clone(),
                false => delta.iter().map(|v| if v.is_nan() { 0.5 } else { *v }).collect(),
            };
            // The atomics add each value's terms in an order of their own (a token repeated ~1,900
            // times in the odd examples at n = 300), so the bound is on the terms' magnitudes.
            let mut magnitudes = vec![0f32; vocab * dim];
            for (k, &id) in with_outside.iter().enumerate() {
                let factor = if with_factors { factors[(k / steps) * groups + group] } else { 1.0 };
                if (id as usize) < vocab && factor != 0.0 {
                    for j in 0..dim {
                        magnitudes[id as usize * dim + j] += (factor * delta[k * dim + j]).abs();
                    }
                }
            }
            let regions = [
                (Region::Arena, delta),
                (Region::Factors, factors.clone()),
                (Region::Grad, uniform(6, vocab * dim)),
            ];
            let (host, device) = on_both_with_tokens(&gpu, &with_outside, &regions, Region::Grad, |ops| {
                let f = with_factors.then_some((Span::new(Region::Factors, 0, n * groups), groups, group));
                let (d, g) =
                    (Span::new(Region::Arena, 0, n * steps * dim), Span::new(Region::Grad, 0, vocab * dim));
                ops.embedding_scatter(Span::new(Region::Tokens, 0, n * steps), d, n, steps, vocab, dim, f, g)
            });
            for (k, ((h, d), m)) in host.iter().zip(&device).zip(&magnitudes).enumerate() {
                assert!(
                    (h - d).abs() <= 1e-5 * (1.0 + m),
                    "embedding_scatter n={n} factors {with_factors}: value {k}: host {h}, gpu {d}, terms' magnitudes {m}"
                );
            }
            assert!(device.iter().all(|v| v.is_finite()), "factor-0 rows never read");
        }

        let scale = 1.0 / steps as f32;
        let regions = [(Region::Arena, uniform(7, n * steps * dim)), (Region::Grad, vec![f32::NAN; n * dim])];
        let (host, device) = on_both(&gpu, &regions, Region::Grad, |ops| {
            let (src, dst) =
                (Span::new(Region::Arena, 0, n * steps * dim), Span::new(Region::Grad, 0, n * dim));
            ops.sequence_sums(src, n, steps, dim, scale, dst)
        });
        assert_eq!(bits(&host), bits(&device), "sequence_sums n={n}");
        let regions = [(Region::Arena, uniform(8, n * dim)), (Region::Grad, vec![f32::NAN; n * steps * dim])];
        let (host, device) = on_both(&gpu, &regions, Region::Grad, |ops| {
            let (src, dst) =
                (Span::new(Region::Arena, 0, n * dim), Span::new(Region::Grad, 0, n * steps * dim));
            ops.sequence_broadcast(src, n, steps, dim, scale, dst)
        });
        assert_eq!(bits(&host), bits(&device), "sequence_broadcast n={n}");
    }
}

/// An LSTM's forward and backward time steps against the host reference, within rounding (CUDA's
/// expf and tanhf against the CPU's libm): the first step (NaN in the recurrent product and hidden
/// state, which it must not read), a middle one and the last (NaN in the gradients from a next step,
/// which it must not read), at 100 units and at 5. NOT YET RUN ON A GPU (docs/GPU.md).
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_lstm_steps_equal_the_host_reference() {
    let Some(gpu) = gpu("lstm steps") else { return };
    for (n, steps, h) in [(300, 6, 100), (7, 4, 5)] {
        let dims = LstmDims { steps, input: 3, hidden: h };
        let (seq, units) = (n * steps * h, n * h);
        // Arena: gates, cells, hprev, out, hidden, recurrent; Params: the bias.
        let lens = [4 * seq, seq, seq, seq, units, 4 * units];
        let spans: Vec<Span> = lens
            .iter()
            .scan(0, |at, &len| {
                *at += len;
                Some(Span::new(Region::Arena, *at - len, len))
            })
            .collect();
        for t in [0, steps / 2, steps - 1] {
            let mut arena = uniform(10 + t as u64, lens.iter().sum());
            if t == 0 {
                let (hidden, recurrent) = (spans[4], spans[5]);
                arena[hidden.offset..recurrent.offset + recurrent.len].fill(f32::NAN);
            }
            let regions = [(Region::Arena, arena.clone()), (Region::Params, uniform(11, 4 * h))];
            let step = LstmForwardStep {
                saved: LstmSaved { gates: spans[0], cells: spans[1], hprev: spans[2] },
                out: spans[3],
                hidden: spans[4],
                recurrent: spans[5],
                bias: Span::new(Region::Params, 0, 4 * h),
            };
            let (host, device) =
                on_both(&gpu, &regions, Region::Arena, |ops| ops.lstm_forward_step(&step, &dims, n, t));
            let written = spans[5].offset;
            assert_near(
                &host[..written],
                &device[..written],
                1e-5,
                &format!("forward step {t} of {steps}, h={h}"),
            );
            assert!(
                device[..written].iter().all(|v| v.is_finite()),
                "forward step {t} read nothing it must not"
            );

            // Backward: gates (activated: in (0, 1)), cells, dout, recurrent, cell_grad, step_delta, delta.
            let mut arena = uniform(20 + t as u64, 4 * seq + 2 * seq + 2 * units + 4 * units + 4 * seq);
            arena[..4 * seq].iter_mut().for_each(|g| *g += 0.5);
            let at = |from: usize, len: usize| Span::new(Region::Arena, from, len);
            let step = LstmBackwardStep {
                gates: at(0, 4 * seq),
                cells: at(4 * seq, seq),
                dout: at(5 * seq, seq),
                recurrent: at(6 * seq, units),
                cell_grad: at(6 * seq + units, units),
                step_delta: at(6 * seq + 2 * units, 4 * units),
                delta: at(6 * seq + 6 * units, 4 * seq),
            };
            if t + 1 == steps {
                arena[6 * seq..6 * seq + 2 * units].fill(f32::NAN);
            }
            let regions = [(Region::Arena, arena)];
            let (host, device) =
                on_both(&gpu, &regions, Region::Arena, |ops| ops.lstm_backward_step(&step, &dims, n, t));
            let from = 6 * seq + units;
            assert_near(
                &host[from..],
                &device[from..],
                1e-5,
                &format!("backward step {t} of {steps}, h={h}"),
            );
            assert!(
                device[from..].iter().all(|v| v.is_finite()),
                "backward step {t} read nothing it must not"
            );
        }
    }
}

/// Attention's primitives on the GPU against the host reference: products over an attention head's
/// columns read and written in place (`gemm_batched_rows`, every transpose, operands inside rows of
/// `3d`, the output inside rows wider than itself, whose other columns must stay as they were), the
/// scaled, masked row softmax (rows longer than a warp and not a multiple of it, a NaN score) and its
/// backward, and the fill. Written without a GPU: NOT YET RUN ON ONE (docs/GPU.md).
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_attention_primitives_equal_the_host_reference() {
    let Some(gpu) = gpu("attention primitives") else { return };
    let (batch, t, d, dh) = (5, 7, 12, 4);
    let rows = t * 3 * d;
    for (a_transposed, b_transposed) in [(false, false), (true, false), (false, true), (true, true)] {
        // a: head 1's k block of each example's [t, 3d] rows, t × dh as stored (m × k, or k × m read
        // transposed); b: a block of the v columns from head 1's, k × n (or n × k) as stored; c: m × n
        // inside rows of n + 3 values.
        let (m, k) = if a_transposed { (dh, t) } else { (t, dh) };
        let n = if b_transposed { 5 } else { dh };
        let (ldc, c_stride) = (n + 3, m * (n + 3) + 2);
        let (a_at, b_at) = (d + dh, 2 * d + dh);
        let qkv = uniform(41, batch * rows);
        let c_len = batch * c_stride;
        let regions = [(Region::Arena, qkv.clone()), (Region::Grad, uniform(42, c_len))];
        let from = |s: Span, at: usize| s.sub(at, s.len - at);
        let all = Span::new(Region::Arena, 0, qkv.len());
        let product = BatchedGemm {
            gemm: Gemm {
                m,
                n,
                k,
                a: from(all, a_at),
                a_transposed,
                b: from(all, b_at),
                b_transposed,
                c: Span::new(Region::Grad, 0, c_len),
                accumulate: false,
                operands: Operands::F32,
            },
            batch,
            stride_a: rows,
            stride_b: rows,
            stride_c: c_stride,
        };
        let ld = LeadingDims { a: 3 * d, b: 3 * d, c: ldc };
        let (host, device) = on_both(&gpu, &regions, Region::Grad, |ops| ops.gemm_batched_rows(product, ld));
        assert_near(&host, &device, 1e-5, &format!("{product:?} {ld:?}"));
        assert_eq!(bits(&host[n..ldc]), bits(&regions[1].1[n..ldc]), "the columns past the output kept");
    }

    for (blocks, steps) in [(2 * 3, 37), (300 * 4, 6), (3, 1)] {
        let len = blocks * steps * steps;
        let scale = 1.0 / (steps as f32).sqrt();
        let mut scores: Vec<f32> = uniform(43, len).iter().map(|v| v * 30.0).collect();
        scores[steps * steps - 1] = f32::NAN;
        for causal in [false, true] {
            let regions = [(Region::Arena, scores.clone())];
            let all = Span::new(Region::Arena, 0, len);
            let (host, device) = on_both(&gpu, &regions, Region::Arena, |ops| {
                ops.attention_softmax(all, blocks, steps, scale, causal)
            });
            let what = format!("softmax {blocks}×{steps}² causal {causal}");
            assert_near(&host, &device, 1e-5, &what);
            let masked = |probs: &[f32]| -> Vec<f32> {
                probs
                    .chunks(steps)
                    .enumerate()
                    .flat_map(|(r, row)| row[if causal { r % steps + 1 } else { steps }..].to_vec())
                    .collect()
            };
            assert!(masked(&device).iter().all(|&v| v == 0.0), "{what}: masked columns exactly 0");

            let regions = [(Region::Arena, [host.clone(), uniform(44, len)].concat())];
            let (probs, grad) = (Span::new(Region::Arena, 0, len), Span::new(Region::Arena, len, len));
            let (host, device) = on_both(&gpu, &regions, Region::Arena, |ops| {
                ops.attention_softmax_backward(probs, grad, blocks, steps, scale)
            });
            assert_near(&host[len..], &device[len..], 1e-5, &format!("backward of the {what}"));
        }
    }

    let regions = [(Region::Arena, vec![f32::NAN; 1000])];
    let ones = Span::new(Region::Arena, 10, 900);
    let (host, device) = on_both(&gpu, &regions, Region::Arena, |ops| ops.fill(ones, 900, 1.0));
    assert_eq!(bits(&host), bits(&device), "fill");
}

/// NaN exactly where `host` has NaN (and some, and some finite values), every other value within
/// `tolerance` times the largest finite magnitude of `host`.
fn assert_near_largest(host: &[f32], device: &[f32], tolerance: f32, what: &str) {
    assert_eq!(host.len(), device.len(), "{what}");
    assert!(
        host.iter().any(|v| v.is_nan()) && host.iter().any(|v| v.is_finite()),
        "{what}: NaN and finite values"
    );
    let largest = host.iter().filter(|v| v.is_finite()).fold(0.0f32, |m, v| m.max(v.abs()));
    for (k, (h, d)) in host.iter().zip(device).enumerate() {
        let ok = if h.is_nan() { d.is_nan() } else { (h - d).abs() <= tolerance * largest };
        assert!(ok, "{what}: value {k}: host {h}, gpu {d}");
    }
}

/// A line on the real stderr: libtest captures `eprintln!` of passing tests, and a skip must be seen.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// update.cu's fold of the parameters into their moving average through the driver against
/// `Ema::update`, bit for bit, over warm-up and fixed decays (written 2026-12-04; not yet run on a
/// GPU).
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_average_fold_equals_the_cpus() {
    use dp_runtime::trainer::ema::Ema;
    let Some(gpu) = gpu("moving average") else { return };
    let len = 100_003;
    let params: Vec<f32> = xorshift(31, len).iter().map(|u| ((u - 0.5) * 10.0) as f32).collect();
    let start: Vec<f32> = xorshift(37, len).iter().map(|u| ((u - 0.5) * 1e-3) as f32).collect();
    let mut ema = Ema::new(0.999, &start).unwrap();
    let mut device = start.clone();
    for update in 0..5 {
        let stepped: Vec<f32> = params.iter().map(|p| p * (1.0 + update as f32)).collect();
        let decay = ema.next_decay();
        ema.update(&stepped);
        gpu.ema_fold(&mut device, &stepped, decay).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert!(bits(&device) == bits(ema.average()), "update {update}: the averages differ");
    }
    say("moving average: 5 folds of 100,003 values equal the CPU's bit for bit");
}

/// update.cu's Adam kernel through the driver against `Adam::step`, bit for bit: Adam with L2 decay
/// at its first update, AdamW at a later one from checkpointed moments (written 2026-12-04; not yet
/// run on a GPU).
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_noisy_adam_update_equals_the_cpus() {
    use dp_cuda::update::{AdamState, AdamStep};
    use dp_runtime::device::DeviceAdam;
    use dp_runtime::optim::Adam;
    let Some(gpu) = gpu("noisy Adam update") else { return };
    let len = 100_003;
    let params: Vec<f32> = xorshift(13, len).iter().map(|u| (u - 0.5) as f32).collect();
    let exp_avg: Vec<f32> = xorshift(17, len).iter().map(|u| (u - 0.5) as f32 * 0.01).collect();
    let exp_avg_sq: Vec<f32> = xorshift(19, len).iter().map(|u| (u * u) as f32 * 1e-3).collect();
    let sum: Vec<f32> = xorshift(23, len).iter().map(|u| ((u - 0.5) * 40.0) as f32).collect();
    let z: Vec<f64> = xorshift(29, len).iter().map(|u| (u - 0.5) * 6.0).collect();
    let lr = 0.003;
    for (decoupled, weight_decay, update) in [(false, 1e-2, 1u64), (true, 0.1, 5)] {
        let adam = match decoupled {
            true => Adam::adamw(lr, weight_decay),
            false => Adam::new(lr).weight_decay(weight_decay),
        };
        let mut adam = adam.betas(0.8, 0.99).eps(1e-6);
        let (mut m, mut v) = (vec![0.0f32; len], vec![0.0f32; len]);
        if update > 1 {
            let buffers = vec![
                ("exp_avg".to_string(), exp_avg.clone()),
                ("exp_avg_sq".to_string(), exp_avg_sq.clone()),
            ];
            let state = OptimizerState { kind: adam.kind().into(), updates: update - 1, buffers };
            adam.load_state(state, len).unwrap();
            (m, v) = (exp_avg.clone(), exp_avg_sq.clone());
        }
        let mut cpu = params.clone();
        let at = StepInfo { step: 0, total_steps: 1 };
        adam.step(&mut cpu, NoisyGradient::with_drawn_noise(&sum, &z, 0.77, 256.0), at);
        let cpu_state = adam.state();
        let mut device = params.clone();
        let state = AdamState { params: &mut device, exp_avg: &mut m, exp_avg_sq: &mut v, sum: &sum, z: &z };
        let settings = DeviceAdam { lr, beta1: 0.8, beta2: 0.99, eps: 1e-6, weight_decay, decoupled };
        let step = AdamStep { noise_std: 0.77, inverse_batch: 1.0 / 256.0, adam: settings };
        gpu.adam_noisy_update(state, step, update).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let case = format!("decoupled {decoupled} update {update}");
        assert!(bits(&device) == bits(&cpu), "{case}: the parameters differ");
        assert!(bits(&m) == bits(&cpu_state.buffers[0].1), "{case}: exp_avg differs");
        assert!(bits(&v) == bits(&cpu_state.buffers[1].1), "{case}: exp_avg_sq differs");
    }
}

/// A transformer's primitives around its products against the host reference: the backward of every
/// activation from its input within rounding (CUDA's tanhf, erff and expf against the CPU's), the
/// strided copy of `first` and its backward, the patches permutation both ways and a LoRA sum's scaled
/// add bit for bit, at a ViT's sizes. NOT YET RUN ON A GPU (docs/GPU.md).
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_transformer_primitives_equal_the_host_reference() {
    let Some(gpu) = gpu("transformer primitives") else { return };
    let len = 300 * 128 * 7;
    let x: Vec<f32> = uniform(11, len).iter().map(|u| u * 16.0).collect();
    for act in [Activation::Relu, Activation::Tanh, Activation::Gelu, Activation::Silu, Activation::GeluExact]
    {
        let regions = [(Region::Inputs, x.clone()), (Region::Arena, uniform(12, len))];
        let (host, device) = on_both(&gpu, &regions, Region::Arena, |ops| {
            let (x, g) = (Span::new(Region::Inputs, 0, len), Span::new(Region::Arena, 0, len));
            ops.activation_backward_from_input(g, x, len, act)
        });
        assert_near(&host, &device, 1e-5, &format!("activation_backward_from_input {act:?}"));
    }
    let regions = [(Region::Inputs, x.clone()), (Region::Arena, uniform(17, len))];
    let (host, device) = on_both(&gpu, &regions, Region::Arena, |ops| {
        let (src, dst) = (Span::new(Region::Inputs, 0, len), Span::new(Region::Arena, 0, len));
        ops.add_scaled_into(dst, src, len, 2.0 / 3.0)
    });
    assert_eq!(bits(&host), bits(&device), "add_scaled_into");
    for n in [1, 7, 300] {
        let (steps, dim) = (65, 64);
        let regions =
            [(Region::Inputs, uniform(13, n * steps * dim)), (Region::Arena, vec![f32::NAN; n * dim])];
        let (host, device) = on_both(&gpu, &regions, Region::Arena, |ops| {
            let (x, out) =
                (Span::new(Region::Inputs, 0, n * steps * dim), Span::new(Region::Arena, 0, n * dim));
            ops.copy_strided(x, steps * dim, out, dim, n, dim)
        });
        assert_eq!(bits(&host), bits(&device), "first n={n}");
        let regions = [(Region::Inputs, uniform(14, n * dim)), (Region::Arena, uniform(15, n * steps * dim))];
        let (host, device) = on_both(&gpu, &regions, Region::Arena, |ops| {
            let (dy, dx) =
                (Span::new(Region::Inputs, 0, n * dim), Span::new(Region::Arena, 0, n * steps * dim));
            ops.copy_strided(dy, dim, dx, steps * dim, n, dim)
        });
        assert_eq!(bits(&host), bits(&device), "first backward n={n}");

        for dims in [
            PatchDims { channels: 1, height: 28, width: 28, size: 4 },
            PatchDims { channels: 3, height: 32, width: 32, size: 8 },
        ] {
            let len = n * dims.len();
            let regions = [(Region::Inputs, uniform(16, len)), (Region::Arena, vec![f32::NAN; len])];
            let (host, device) = on_both(&gpu, &regions, Region::Arena, |ops| {
                let (x, out) = (Span::new(Region::Inputs, 0, len), Span::new(Region::Arena, 0, len));
                ops.patches_forward(x, &dims, n, out)
            });
            assert_eq!(bits(&host), bits(&device), "patches_forward {dims:?} n={n}");
            let (host, device) = on_both(&gpu, &regions, Region::Arena, |ops| {
                let (dout, dx) = (Span::new(Region::Inputs, 0, len), Span::new(Region::Arena, 0, len));
                ops.patches_backward(dout, &dims, n, dx)
            });
            assert_eq!(bits(&host), bits(&device), "patches_backward {dims:?} n={n}");
        }
    }
}

/// A grouped conv's products as its device program launches them, against the host reference: per
/// group `q`, a strided batch over the examples on group `q`'s blocks (the weight's rows `q·og..`, the
/// patches' rows `q·d..`, the output's channels `q·og..`): forward `W_q·P_i,q`, backward `W_qᵀ·δ_i,q`
/// and each example's weight gradient `δ_i,q·P_i,qᵀ` into the parameter's layout. Two groups with a
/// stride, and a depthwise conv (a group per channel). NOT YET RUN ON A GPU (docs/GPU.md).
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_grouped_conv_products_equal_the_host_reference() {
    let Some(gpu) = gpu("grouped conv products") else { return };
    let geom = |in_c, out_c, groups, stride| Conv2dGeometry {
        in_c,
        in_h: 9,
        in_w: 9,
        out_c,
        kh: 3,
        kw: 3,
        stride,
        padding: 1,
        dilation: 1,
        groups,
    };
    for (g, n) in [(geom(4, 6, 2, 2), 7), (geom(16, 16, 16, 1), 33)] {
        let (t, d, og) = (g.positions(), g.patch_len(), g.out_per_group());
        let (cols, out, weight) = (n * g.patches_len(), n * g.output_len(), g.weight_len());
        // (m, n, k), a (region, transposed, stride, step), b (…), c (stride, step) of each product.
        let products = [
            (
                "forward",
                (og, t, d),
                (Region::Params, false, 0, og * d),
                (Region::Arena, false, g.patches_len(), d * t),
                (g.output_len(), og * t),
            ),
            (
                "to the patches",
                (d, t, og),
                (Region::Params, true, 0, og * d),
                (Region::Inputs, false, g.output_len(), og * t),
                (g.patches_len(), d * t),
            ),
            (
                "weight gradients",
                (og, d, t),
                (Region::Inputs, false, g.output_len(), og * t),
                (Region::Arena, true, g.patches_len(), d * t),
                (weight, og * d),
            ),
        ];
        let region_len = |r: Region| match r {
            Region::Params => weight,
            Region::Arena => cols,
            _ => out,
        };
        for (what, (m, nn, k), (ra, at, sa, step_a), (rb, bt, sb, step_b), (sc, step_c)) in products {
            let c_len = n * sc;
            let regions = [
                (Region::Params, uniform(1, weight)),
                (Region::Arena, uniform(2, cols)),
                (Region::Inputs, uniform(3, out)),
                (Region::Grad, vec![f32::NAN; c_len]),
            ];
            let (host, device) = on_both(&gpu, &regions, Region::Grad, |ops| {
                for q in 0..g.groups {
                    let from = |r: Region, len: usize, step: usize| Span::new(r, q * step, len - q * step);
                    ops.gemm_batched(BatchedGemm {
                        gemm: Gemm {
                            m,
                            n: nn,
                            k,
                            a: from(ra, region_len(ra), step_a),
                            a_transposed: at,
                            b: from(rb, region_len(rb), step_b),
                            b_transposed: bt,
                            c: from(Region::Grad, c_len, step_c),
                            accumulate: false,
                            operands: Operands::OfPrecision,
                        },
                        batch: n,
                        stride_a: sa,
                        stride_b: sb,
                        stride_c: sc,
                    })?;
                }
                Ok(())
            });
            assert_near(&host, &device, 1e-5, &format!("{what} {g:?}"));
        }
    }
}
