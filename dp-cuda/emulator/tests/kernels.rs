//! dp-cuda's kernels run by the emulator's CUDA execution model, launched by name with the geometry
//! and argument order dp-cuda's launches use (dp-cuda/src/program*.rs, device.rs, noise.rs), checked
//! against sequential sums on the host; and the emulator's own test kernels for the CUDA semantics
//! and the launch errors it models.

use std::ffi::c_void;
use std::time::Instant;

use dp_cuda_emulator::kernels::{self, LaunchErrorKind, ParamLayout, ThreadOrder};

const ORDERS: [ThreadOrder; 4] =
    [ThreadOrder::Forward, ThreadOrder::Reverse, ThreadOrder::Shuffled, ThreadOrder::Warps];

/// A pointer to one kernel argument, as `kernelParams` holds it.
fn arg<T>(value: &mut T) -> *mut c_void {
    (value as *mut T).cast()
}

/// A `dp_values` argument for an f32 buffer: its address (bit 0 clear: f32 storage).
fn values(buffer: &mut [f32]) -> u64 {
    buffer.as_mut_ptr() as u64
}

/// dp-cuda's `elementwise(len)`: 256 threads a block, at most 8192 blocks (the kernels stride).
fn elementwise(len: usize) -> [u32; 3] {
    [len.div_ceil(256).clamp(1, 8192) as u32, 1, 1]
}

/// dp-cuda's `per_warp(items)` grid (blocks of 256 threads, a warp per item).
fn per_warp(items: usize) -> [u32; 3] {
    [items.div_ceil(8).clamp(1, 8192) as u32, 1, 1]
}

const BLOCK_256: [u32; 3] = [256, 1, 1];

/// Deterministic values in [-1, 1) (xorshift64*).
fn random_values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let bits = state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
            (bits as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn launch(name: &str, grid: [u32; 3], block: [u32; 3], params: &mut [*mut c_void]) {
    // SAFETY: every test passes pointers to locals of the kernel's parameter types, and buffers as
    // long as the kernel reads and writes.
    unsafe { kernels::launch(name, grid, block, 0, params.as_mut_ptr()) }.unwrap_or_else(|e| panic!("{e}"));
}

fn launch_self_test(
    name: &str,
    grid: [u32; 3],
    block: [u32; 3],
    params: &mut [*mut c_void],
) -> Result<(), kernels::LaunchError> {
    // SAFETY: as `launch`, for the self-test kernels' parameters.
    unsafe { kernels::launch_self_test(name, grid, block, params.as_mut_ptr()) }
}

fn assert_close(actual: f64, expected: f64, scale: f64, tolerance: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= tolerance * scale.max(f64::MIN_POSITIVE),
        "{what}: {actual} against {expected} (scale {scale})"
    );
}

#[test]
fn the_registry_lists_every_kernel_of_the_cuda_sources() {
    let names = kernels::kernel_names();
    for name in [
        "dp_row_sums",
        "dp_kept_sq_norms",
        "dp_lstm_forward_fused",
        "dp_noise_retry",
        "dp_convert",
        "dp_fill",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
        assert!(kernels::has_kernel(name));
    }
    let mut unique = names.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "kernel names are unique");
    // Every `__global__` of the sources, which build.rs must not miss (two are spelled over two lines
    // with __launch_bounds__ in conv.cu and two in lstm.cu).
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../kernels");
    let mut globals = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "cu") {
            let text = std::fs::read_to_string(&path).unwrap();
            globals += text.lines().filter(|l| l.trim_start().starts_with("extern \"C\" __global__")).count();
        }
    }
    assert_eq!(names.len(), globals);
    assert!(!kernels::has_kernel("dp_no_such_kernel"));
    assert!(!kernels::has_kernel("dp_emu_selftest_indices"), "the self-test kernels are not dp's");

    let u64_layout = ParamLayout { size: 8, align: 8 };
    // dp_im2col(dp_values x, dp_conv_geometry g (ten u64), dp_u64 n, dp_values cols).
    assert_eq!(
        kernels::param_layouts("dp_im2col").unwrap(),
        vec![u64_layout, ParamLayout { size: 80, align: 8 }, u64_layout, u64_layout]
    );
    // dp_attention_softmax(dp_values, dp_u64, dp_u64, float, int).
    let four = ParamLayout { size: 4, align: 4 };
    assert_eq!(
        kernels::param_layouts("dp_attention_softmax").unwrap(),
        vec![u64_layout, u64_layout, u64_layout, four, four]
    );
    assert_eq!(kernels::param_layouts("dp_nothing"), None);
}

#[test]
fn row_sums_add_each_row_with_warp_shuffles() {
    for (rows, cols) in [(37usize, 45usize), (5, 7), (100, 32), (3, 300)] {
        let mut src = random_values(rows * cols, rows as u64 * 31 + cols as u64);
        let mut dst = vec![f32::NAN; rows];
        let (mut s, mut d) = (values(&mut src), values(&mut dst));
        let (mut r, mut c) = (rows as u64, cols as u64);
        launch(
            "dp_row_sums",
            per_warp(rows),
            BLOCK_256,
            &mut [arg(&mut s), arg(&mut r), arg(&mut c), arg(&mut d)],
        );
        for (i, &sum) in dst.iter().enumerate() {
            let row = &src[i * cols..(i + 1) * cols];
            let exact: f64 = row.iter().map(|&v| f64::from(v)).sum();
            let scale: f64 = row.iter().map(|&v| f64::from(v).abs()).sum();
            assert_close(f64::from(sum), exact, scale, 1e-6, &format!("row {i} of {rows} x {cols}"));
        }
    }
}

/// dp_kept_sq_norms with `grid` blocks of 1024 threads (dp-cuda's per_block(n, KEPT_NORM_THREADS) when
/// grid = n): the norms of n examples into group `group` of `groups`.
fn kept_sq_norms(
    weight: &mut [f32],
    weight_len: usize,
    bias: Option<(&mut [f32], usize)>,
    n: usize,
    grid: u32,
) -> Vec<f32> {
    let (groups, group) = (3usize, 1usize);
    let mut sq_norms = vec![-1.0f32; n * groups];
    let mut w = values(weight);
    let (mut b, mut bias_len) = match bias {
        Some((b, len)) => (values(b), len as u64),
        None => (w, 0),
    };
    let (mut wl, mut n64, mut gs, mut g) = (weight_len as u64, n as u64, groups as u64, group as u64);
    let mut q = sq_norms.as_mut_ptr();
    launch(
        "dp_kept_sq_norms",
        [grid, 1, 1],
        [1024, 1, 1],
        &mut [
            arg(&mut w),
            arg(&mut wl),
            arg(&mut b),
            arg(&mut bias_len),
            arg(&mut n64),
            arg(&mut q),
            arg(&mut gs),
            arg(&mut g),
        ],
    );
    for i in 0..n {
        for k in 0..groups {
            if k != group {
                assert_eq!(sq_norms[i * groups + k], -1.0, "only group {group} written");
            }
        }
    }
    (0..n).map(|i| sq_norms[i * groups + group]).collect()
}

fn squares(values: &[f32]) -> f64 {
    values.iter().map(|&v| f64::from(v) * f64::from(v)).sum()
}

#[test]
fn kept_sq_norms_sum_blocks_of_1024_threads() {
    let (n, weight_len, bias_len) = (5usize, 3000usize, 17usize);
    let mut weight = random_values(n * weight_len, 7);
    let mut bias = random_values(n * bias_len, 8);
    let expected: Vec<f64> = (0..n)
        .map(|i| {
            squares(&weight[i * weight_len..(i + 1) * weight_len])
                + squares(&bias[i * bias_len..(i + 1) * bias_len])
        })
        .collect();
    // One block per example, then fewer blocks than examples (each block strides over several).
    for grid in [n as u32, 2] {
        let norms = kept_sq_norms(&mut weight, weight_len, Some((&mut bias, bias_len)), n, grid);
        for (i, (&norm, &exact)) in norms.iter().zip(&expected).enumerate() {
            assert_close(f64::from(norm), exact, exact, 1e-5, &format!("example {i}, grid {grid}"));
        }
    }
    let without_bias = kept_sq_norms(&mut weight, weight_len, None, n, n as u32);
    for (i, &norm) in without_bias.iter().enumerate() {
        let exact = squares(&weight[i * weight_len..(i + 1) * weight_len]);
        assert_close(f64::from(norm), exact, exact, 1e-5, &format!("example {i} without bias"));
    }
}

#[test]
fn count_non_finite_adds_shuffled_counts_atomically() {
    let len = 10_000usize;
    let mut data = random_values(len, 3);
    let mut planted = 0u32;
    for (k, i) in (0..len).step_by(97).enumerate() {
        data[i] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][k % 3];
        planted += 1;
    }
    // A run of them too, so that most lanes of some warps count one and the shuffles' tree matters.
    for v in &mut data[5000..5045] {
        if v.is_finite() {
            *v = f32::NAN;
            planted += 1;
        }
    }
    for grid in [elementwise(len), [3, 1, 1]] {
        let mut count = 5u32;
        let (mut v, mut n, mut c) = (values(&mut data), len as u64, &mut count as *mut u32);
        launch("dp_count_non_finite", grid, BLOCK_256, &mut [arg(&mut v), arg(&mut n), arg(&mut c)]);
        assert_eq!(count, 5 + planted, "grid {grid:?}");
    }
}

#[test]
fn add_into_strides_over_more_values_than_threads() {
    let len = 100_000usize;
    let mut dst = random_values(len, 11);
    let mut src = random_values(len, 12);
    let expected: Vec<f32> = dst.iter().zip(&src).map(|(a, b)| a + b).collect();
    let (mut d, mut s, mut n) = (values(&mut dst), values(&mut src), len as u64);
    launch("dp_add_into", [4, 1, 1], BLOCK_256, &mut [arg(&mut d), arg(&mut s), arg(&mut n)]);
    assert_eq!(dst, expected);

    let mut filled = vec![0.0f32; 1000];
    let (mut f, mut n, mut value) = (values(&mut filled), 999u64, 2.5f32);
    launch("dp_fill", [1, 1, 1], [64, 1, 1], &mut [arg(&mut f), arg(&mut n), arg(&mut value)]);
    assert!(filled[..999].iter().all(|&v| v == 2.5));
    assert_eq!(filled[999], 0.0, "nothing past len");
}

#[test]
fn convert_rounds_into_bf16_storage() {
    let len = 5000usize;
    let mut src: Vec<f32> = random_values(len, 21).iter().map(|v| v * 1000.0).collect();
    let mut dst = vec![0u16; len];
    // A bf16 buffer: its address with bit 0 set.
    let (mut s, mut d, mut n) = (values(&mut src), dst.as_mut_ptr() as u64 | 1, len as u64);
    launch("dp_convert", elementwise(len), BLOCK_256, &mut [arg(&mut s), arg(&mut d), arg(&mut n)]);
    for (i, (&b, &v)) in dst.iter().zip(&src).enumerate() {
        assert_eq!(b, half::bf16::from_f32(v).to_bits(), "value {i}: {v}");
    }
    // And back, exactly.
    let mut back = vec![0.0f32; len];
    let (mut s, mut d) = (dst.as_mut_ptr() as u64 | 1, values(&mut back));
    launch("dp_convert", elementwise(len), BLOCK_256, &mut [arg(&mut s), arg(&mut d), arg(&mut n)]);
    assert!(back.iter().zip(&dst).all(|(&f, &b)| f == half::bf16::from_bits(b).to_f32()));
}

#[test]
fn attention_softmax_normalises_rows_with_xor_shuffles() {
    let (blocks, steps, scale) = (3usize, 37usize, 0.3f32);
    let rows = blocks * steps;
    for causal in [0i32, 1] {
        let original = random_values(rows * steps, 40 + causal as u64);
        let mut scores: Vec<f32> = original.iter().map(|v| v * 8.0).collect();
        let inputs = scores.clone();
        let (mut s, mut r, mut st, mut sc, mut c) =
            (values(&mut scores), rows as u64, steps as u64, scale, causal);
        launch(
            "dp_attention_softmax",
            elementwise(rows * 32),
            BLOCK_256,
            &mut [arg(&mut s), arg(&mut r), arg(&mut st), arg(&mut sc), arg(&mut c)],
        );
        for row in 0..rows {
            let visible = if causal == 1 { row % steps + 1 } else { steps };
            let x = &inputs[row * steps..(row + 1) * steps];
            let max = x[..visible].iter().map(|&v| f64::from(scale * v)).fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = x[..visible].iter().map(|&v| (f64::from(scale * v) - max).exp()).sum();
            for col in 0..steps {
                let got = scores[row * steps + col];
                if col < visible {
                    let exact = (f64::from(scale * x[col]) - max).exp() / sum;
                    assert_close(
                        f64::from(got),
                        exact,
                        exact,
                        1e-5,
                        &format!("row {row} col {col} causal {causal}"),
                    );
                } else {
                    assert_eq!(got.to_bits(), 0, "masked row {row} col {col}: exactly +0");
                }
            }
        }
    }
}

extern "C" {
    /// noise.cu's serial draw on the host (kernels/noise_host_reference.cpp).
    fn dp_emu_selftest_noise_reference(
        key: *const u32,
        len: u64,
        edge: *const f64,
        ratio: *const f64,
        density: *const f64,
        out: *mut f64,
        first_words: *mut u64,
    );
}

/// Ziggurat tables of 256 layers as noise.cu reads them (Marsaglia and Tsang's, as rand_distr's):
/// edge x_0..x_256 (x_0 = v / f(R), x_1 = R, x_256 = 0), ratio x_{i+1} / x_i, density f(x_i).
fn ziggurat_tables() -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (r, v) = (3.654_152_885_361_009f64, 0.004_928_673_233_99f64);
    let f = |x: f64| (-0.5 * x * x).exp();
    let mut edge = vec![0.0; 257];
    edge[0] = v / f(r);
    edge[1] = r;
    for i in 1..255 {
        edge[i + 1] = (-2.0 * (v / edge[i] + f(edge[i])).ln()).sqrt();
    }
    edge[256] = 0.0;
    let ratio = (0..256).map(|i| edge[i + 1] / edge[i]).collect();
    let density = edge.iter().map(|&x| f(x)).collect();
    (edge, ratio, density)
}

#[test]
fn noise_kernels_draw_the_serial_reference_bit_for_bit() {
    // Three chunks of 16 384, the last short (and its last segment too).
    let len = 2 * 16_384 + 5_000usize;
    let key: [u32; 8] = [0x0123_4567, 0x89ab_cdef, 7, 11, 13, 17, 19, 0xdead_beef];
    let (edge, ratio, density) = ziggurat_tables();
    let mut expected = vec![0.0f64; len];
    let mut scratch = vec![0u64; len];
    // SAFETY: the tables are 257, 256 and 257 values, out and scratch `len`.
    unsafe {
        dp_emu_selftest_noise_reference(
            key.as_ptr(),
            len as u64,
            edge.as_ptr(),
            ratio.as_ptr(),
            density.as_ptr(),
            expected.as_mut_ptr(),
            scratch.as_mut_ptr(),
        )
    };
    let mut out = vec![0.0f64; len];
    let mut first_words = vec![0u64; len];
    let (mut k, mut n) = (key.as_ptr(), len as u64);
    let (mut e, mut r, mut d) = (edge.as_ptr(), ratio.as_ptr(), density.as_ptr());
    let (mut o, mut w) = (out.as_mut_ptr(), first_words.as_mut_ptr());
    // dp-cuda's NoiseLaunch::for_len: a thread per ChaCha20 block of each chunk, then a warp per segment.
    let first_grid = (len.div_ceil(16_384) * 2048).div_ceil(256) as u32;
    launch(
        "dp_noise_first",
        [first_grid, 1, 1],
        BLOCK_256,
        &mut [arg(&mut k), arg(&mut n), arg(&mut e), arg(&mut r), arg(&mut o), arg(&mut w)],
    );
    let redo = out.iter().filter(|v| v.is_nan()).count();
    assert!(redo > len / 200 && redo < len / 20, "{redo} of {len} left to pass 2");
    let retry_grid = len.div_ceil(1024).div_ceil(8) as u32;
    let mut wc = first_words.as_ptr();
    launch(
        "dp_noise_retry",
        [retry_grid, 1, 1],
        BLOCK_256,
        &mut [arg(&mut k), arg(&mut n), arg(&mut e), arg(&mut r), arg(&mut d), arg(&mut wc), arg(&mut o)],
    );
    for (i, (a, b)) in out.iter().zip(&expected).enumerate() {
        assert_eq!(a.to_bits(), b.to_bits(), "coordinate {i}: {a} against {b}");
    }
    let mean = out.iter().sum::<f64>() / len as f64;
    let variance = out.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / len as f64;
    assert!(mean.abs() < 0.03 && (variance - 1.0).abs() < 0.05, "mean {mean}, variance {variance}");
}

#[test]
fn launch_errors_name_the_kernel_and_the_configuration() {
    let mut nothing: [*mut c_void; 0] = [];
    // Kernel, grid, block, dynamic shared bytes, and the error.
    type Case = (&'static str, [u32; 3], [u32; 3], u32, LaunchErrorKind);
    let cases: [Case; 7] = [
        ("dp_no_such_kernel", [1, 1, 1], [32, 1, 1], 0, LaunchErrorKind::UnknownKernel),
        ("dp_fill", [1, 1, 1], [1025, 1, 1], 0, LaunchErrorKind::InvalidConfiguration),
        ("dp_fill", [1, 1, 1], [32, 32, 2], 0, LaunchErrorKind::InvalidConfiguration),
        ("dp_fill", [1, 1, 1], [1, 1, 65], 0, LaunchErrorKind::InvalidConfiguration),
        ("dp_fill", [0, 1, 1], [32, 1, 1], 0, LaunchErrorKind::InvalidConfiguration),
        ("dp_fill", [1, 65_536, 1], [32, 1, 1], 0, LaunchErrorKind::InvalidConfiguration),
        ("dp_fill", [1, 1, 1], [32, 1, 1], 16, LaunchErrorKind::InvalidConfiguration),
    ];
    for (name, grid, block, shared, kind) in cases {
        // SAFETY: none of these launches runs a thread.
        let error =
            unsafe { kernels::launch_detailed(name, grid, block, shared, nothing.as_mut_ptr()) }.unwrap_err();
        assert_eq!(error.kind, kind, "{name} {grid:?} {block:?}: {error}");
        assert!(error.message.contains(name), "{error}");
    }
    // SAFETY: as above.
    let error =
        unsafe { kernels::launch("dp_fill", [1, 1, 1], [1025, 1, 1], 0, nothing.as_mut_ptr()) }.unwrap_err();
    assert!(error.contains("1025"), "{error}");
}

#[test]
fn threads_see_their_indices_and_run_in_cuda_order() {
    kernels::set_thread_order_for_this_thread(Some(ThreadOrder::Forward));
    let (grid, block) = ([3u32, 2, 2], [5u32, 3, 2]);
    let blocks = (grid[0] * grid[1] * grid[2]) as usize;
    let threads = (block[0] * block[1] * block[2]) as usize;
    let mut out = vec![u32::MAX; blocks * threads * 3];
    let mut started = 0u32;
    let (mut o, mut s) = (out.as_mut_ptr(), &mut started as *mut u32);
    launch_self_test("dp_emu_selftest_indices", grid, block, &mut [arg(&mut o), arg(&mut s)]).unwrap();
    let pack = |x: u32, y: u32, z: u32| x | y << 10 | z << 20;
    let mut at = 0;
    for (bz, by, bx) in
        (0..grid[2]).flat_map(|z| (0..grid[1]).flat_map(move |y| (0..grid[0]).map(move |x| (z, y, x))))
    {
        for (tz, ty, tx) in
            (0..block[2]).flat_map(|z| (0..block[1]).flat_map(move |y| (0..block[0]).map(move |x| (z, y, x))))
        {
            assert_eq!(out[3 * at], pack(tx, ty, tz));
            assert_eq!(out[3 * at + 1], pack(bx, by, bz));
            assert_eq!(out[3 * at + 2], at as u32, "blocks in blockIdx order, threads x fastest");
            at += 1;
        }
    }
    assert_eq!(started as usize, blocks * threads);
}

/// What dp_emu_selftest_indices recorded of a launch of `grid` x `block` under `order`, checked: each
/// thread's indices are its own, every thread of the grid ran once, and the blocks one after the
/// other. For each block in the order they ran, its linear index and its threads' linear indices in
/// the order they began.
fn run_order(grid: [u32; 3], block: [u32; 3], order: ThreadOrder) -> Vec<(usize, Vec<usize>)> {
    kernels::set_thread_order_for_this_thread(Some(order));
    let blocks = (grid[0] * grid[1] * grid[2]) as usize;
    let threads = (block[0] * block[1] * block[2]) as usize;
    let mut out = vec![u32::MAX; blocks * threads * 3];
    let mut started = 0u32;
    let (mut o, mut s) = (out.as_mut_ptr(), &mut started as *mut u32);
    launch_self_test("dp_emu_selftest_indices", grid, block, &mut [arg(&mut o), arg(&mut s)]).unwrap();
    assert_eq!(started as usize, blocks * threads);
    let pack = |i: usize, dims: [u32; 3]| {
        let (x, y, z) = (i as u32 % dims[0], i as u32 / dims[0] % dims[1], i as u32 / (dims[0] * dims[1]));
        x | y << 10 | z << 20
    };
    let mut ran: Vec<Option<(usize, Vec<usize>)>> = vec![None; blocks];
    for b in 0..blocks {
        let ranks: Vec<usize> = (0..threads).map(|t| out[3 * (b * threads + t) + 2] as usize).collect();
        let position = ranks[0] / threads;
        let mut in_order = vec![usize::MAX; threads];
        for (t, &rank) in ranks.iter().enumerate() {
            let at = b * threads + t;
            assert_eq!(out[3 * at], pack(t, block), "{order:?}: thread {t} of block {b}");
            assert_eq!(out[3 * at + 1], pack(b, grid), "{order:?}: block {b}");
            assert_eq!(rank / threads, position, "{order:?}: block {b} ran between two others' threads");
            in_order[rank % threads] = t;
        }
        assert!(ran[position].is_none(), "{order:?}: two blocks ran at position {position}");
        ran[position] = Some((b, in_order));
    }
    // Every rank below blocks · threads was taken once, so every thread ran once.
    ran.into_iter().map(|r| r.expect("every position taken")).collect()
}

#[test]
fn reverse_and_shuffled_orders_run_every_thread_and_block_once_in_their_order() {
    let (grid, block) = ([3u32, 2, 2], [5u32, 3, 2]);
    let (blocks, threads) = (12usize, 30usize);
    let forward = run_order(grid, block, ThreadOrder::Forward);
    let identity: Vec<usize> = (0..threads).collect();
    assert!(forward.iter().enumerate().all(|(i, (b, order))| *b == i && *order == identity));

    let reverse = run_order(grid, block, ThreadOrder::Reverse);
    let backwards: Vec<usize> = (0..threads).rev().collect();
    for (i, (b, order)) in reverse.iter().enumerate() {
        assert_eq!(*b, blocks - 1 - i, "reverse: the blocks from the last");
        assert_eq!(*order, backwards, "reverse: block {b}'s threads from the last");
    }

    let shuffled = run_order(grid, block, ThreadOrder::Shuffled);
    let block_order: Vec<usize> = shuffled.iter().map(|(b, _)| *b).collect();
    assert_ne!(block_order, (0..blocks).collect::<Vec<_>>(), "shuffled blocks in forward order");
    assert_ne!(block_order, (0..blocks).rev().collect::<Vec<_>>(), "shuffled blocks in reverse order");
    for (b, order) in &shuffled {
        assert!(*order != identity && *order != backwards, "block {b}'s threads not shuffled: {order:?}");
    }
    assert_ne!(shuffled[0].1, shuffled[1].1, "each block's threads in a permutation of their own");
    // The next launch on this thread draws other permutations.
    let again = run_order(grid, block, ThreadOrder::Shuffled);
    assert_ne!(again, shuffled);

    // A grid that is no power of two (the permutation walks its cycles past the grid's end).
    let large = run_order([37, 5, 3], [2, 1, 1], ThreadOrder::Shuffled);
    let mut large_order: Vec<usize> = large.iter().map(|(b, _)| *b).collect();
    assert_ne!(large_order, (0..555).collect::<Vec<_>>());
    large_order.sort_unstable();
    assert_eq!(large_order, (0..555).collect::<Vec<_>>());
}

#[test]
fn shuffled_orders_are_the_same_for_the_same_launches_of_an_os_thread() {
    let launches = || {
        std::thread::spawn(|| {
            (0..3).map(|_| run_order([4, 3, 1], [7, 2, 1], ThreadOrder::Shuffled)).collect::<Vec<_>>()
        })
        .join()
        .unwrap()
    };
    assert_eq!(launches(), launches());
}

#[test]
fn every_pass_over_a_block_has_its_order() {
    let threads = 64usize;
    let passes = |order| {
        kernels::set_thread_order_for_this_thread(Some(order));
        let mut ranks = vec![u32::MAX; 2 * threads];
        let mut counters = [0u32; 2];
        let (mut r, mut c) = (ranks.as_mut_ptr(), counters.as_mut_ptr());
        launch_self_test(
            "dp_emu_selftest_pass_order",
            [1, 1, 1],
            [threads as u32, 1, 1],
            &mut [arg(&mut r), arg(&mut c)],
        )
        .unwrap();
        assert_eq!(counters, [threads as u32; 2]);
        // The threads in the order they began, and in the order they went on past the barrier.
        let mut before = vec![usize::MAX; threads];
        let mut after = vec![usize::MAX; threads];
        for t in 0..threads {
            before[ranks[2 * t] as usize] = t;
            after[ranks[2 * t + 1] as usize] = t;
        }
        (before, after)
    };
    // The last thread to reach the barrier goes on at once, the others in the next pass.
    let (before, after) = passes(ThreadOrder::Forward);
    assert_eq!(before, (0..threads).collect::<Vec<_>>());
    assert_eq!(after, [threads - 1].into_iter().chain(0..threads - 1).collect::<Vec<_>>());
    let (before, after) = passes(ThreadOrder::Reverse);
    assert_eq!(before, (0..threads).rev().collect::<Vec<_>>());
    assert_eq!(after, [0].into_iter().chain((1..threads).rev()).collect::<Vec<_>>());
    let (before, after) = passes(ThreadOrder::Shuffled);
    assert_eq!(after[0], before[threads - 1], "the last to arrive goes on");
    assert_ne!(after[1..], before[..threads - 1], "the second pass draws a permutation of its own");
    // Warp by warp, each warp's lanes in order, the warps in an order drawn per pass: here the
    // first pass took warp 1 first and the second warp 0 (the last to arrive is warp 0's lane 31).
    let (before, after) = passes(ThreadOrder::Warps);
    let warp_first = before[0] / 32;
    let lanes = |warp: usize| warp * 32..warp * 32 + 32;
    assert_eq!(before, lanes(warp_first).chain(lanes(1 - warp_first)).collect::<Vec<_>>());
    assert_eq!(after[0], before[threads - 1], "the last to arrive goes on");
    let second = after[1] / 32;
    let mut rest: Vec<usize> = lanes(second).chain(lanes(1 - second)).collect();
    rest.retain(|&t| t != after[0]);
    assert_eq!(after[1..], rest[..]);
}

/// A self-test kernel of (synchronise, out) over `blocks` blocks of `threads` threads in `order`, with
/// or without its barrier: the values each thread read into out.
fn values_read(kernel: &str, blocks: u32, threads: u32, order: ThreadOrder, synchronise: bool) -> Vec<u32> {
    kernels::set_thread_order_for_this_thread(Some(order));
    let mut out = vec![0u32; (blocks * threads) as usize];
    let (mut s, mut o) = (i32::from(synchronise), out.as_mut_ptr());
    launch_self_test(kernel, [blocks, 1, 1], [threads, 1, 1], &mut [arg(&mut s), arg(&mut o)]).unwrap();
    out
}

/// dp_emu_selftest_warp_runs_ahead over 8 blocks of 256 threads: the values each thread read.
fn warp_runs_ahead(order: ThreadOrder, synchronise: bool) -> Vec<u32> {
    values_read("dp_emu_selftest_warp_runs_ahead", 8, 256, order, synchronise)
}

#[test]
fn a_warp_running_ahead_shows_a_missing_syncthreads_the_passes_hide() {
    for order in ORDERS {
        assert!(warp_runs_ahead(order, true).iter().all(|&v| v == 1), "{order:?} with the barrier");
    }
    // Forward: every thread reads before warp 0's lane 0 passes its __syncwarp.
    assert!(warp_runs_ahead(ThreadOrder::Forward, false).iter().all(|&v| v == 1));
    // Warps: in each block the warps after warp 0 read what it wrote for its next use (here in every
    // block: warp 0 is never the last of 8 in these permutations).
    let ahead = warp_runs_ahead(ThreadOrder::Warps, false);
    assert!(ahead.iter().all(|&v| v == 1 || v == 2));
    for (block, values) in ahead.chunks(256).enumerate() {
        let late_warps = values.chunks(32).filter(|warp| warp.iter().all(|&v| v == 2)).count();
        assert!(late_warps > 0, "block {block}: no warp read the value written ahead: {values:?}");
        assert!(values[..32].iter().all(|&v| v == 1), "block {block}: warp 0 read its own value first");
    }
}

#[test]
fn launch_errors_name_the_block_and_thread_in_every_order() {
    let (grid, block) = ([3u32, 2, 2], [5u32, 3, 2]);
    // Block (2, 1, 0) and thread (4, 2, 1): linear 2 + 3 · 1 and 4 + 5 · (2 + 3 · 1).
    let (mut failing_block, mut failing_thread, mut out) = (5u32, 29u32, 0i32);
    let mut o = &mut out as *mut i32;
    for order in ORDERS {
        kernels::set_thread_order_for_this_thread(Some(order));
        let error = launch_self_test(
            "dp_emu_selftest_fail_in_block",
            grid,
            block,
            &mut [arg(&mut failing_block), arg(&mut failing_thread), arg(&mut o)],
        )
        .unwrap_err();
        assert_eq!(error.kind, LaunchErrorKind::ExecutionFailed);
        assert_eq!(
            error.message,
            "dp_emu_selftest_fail_in_block: block (2, 1, 0): thread (4, 2, 1) (warp 0, lane 29): __shfl_sync \
             with mask 0x00000000, which does not name the calling lane 29",
            "{order:?}"
        );
    }
}

/// dp_emu_selftest_missing_syncthreads over 2 blocks of 64 threads: the values each thread read.
fn missing_syncthreads(order: ThreadOrder, synchronise: bool) -> Vec<u32> {
    values_read("dp_emu_selftest_missing_syncthreads", 2, 64, order, synchronise)
}

#[test]
fn a_missing_syncthreads_shows_in_the_orders_other_than_forward() {
    let right: Vec<u32> = (0..128u32).map(|at| 7 * (at % 64).saturating_sub(1) + 1).collect();
    for order in ORDERS {
        assert_eq!(missing_syncthreads(order, true), right, "{order:?} with the barrier");
    }
    // Without it, each thread reads a slot the thread before it wrote before it, in forward order
    // only; in reverse order that thread has not run yet, and the slot holds the block's poison.
    assert_eq!(missing_syncthreads(ThreadOrder::Forward, false), right);
    let reverse = missing_syncthreads(ThreadOrder::Reverse, false);
    for (at, &got) in reverse.iter().enumerate() {
        let expected = if at % 64 == 0 { right[at] } else { u32::MAX };
        assert_eq!(got, expected, "reverse, thread {} of block {}", at % 64, at / 64);
    }
    let shuffled = missing_syncthreads(ThreadOrder::Shuffled, false);
    let wrong = shuffled.iter().zip(&right).filter(|(got, right)| got != right).count();
    assert!(wrong > 16, "shuffled: {wrong} of 128 wrong");
    assert!(shuffled.iter().zip(&right).all(|(&got, &right)| got == right || got == u32::MAX));
}

#[test]
fn a_block_finds_its_shared_memory_poisoned() {
    // On a fresh OS thread, whose copies of the __shared__ variables start as zeros: without the
    // poisoning the first block would read 0 from a slot nobody wrote, and later blocks the values
    // block 0 left there.
    std::thread::spawn(|| {
        for order in ORDERS {
            kernels::set_thread_order_for_this_thread(Some(order));
            let len = 3 * 64;
            let (mut values, mut counts) = (vec![0.0f32; len], vec![0i32; len]);
            let (mut v, mut c) = (values.as_mut_ptr(), counts.as_mut_ptr());
            launch_self_test(
                "dp_emu_selftest_unwritten_shared",
                [3, 1, 1],
                [64, 1, 1],
                &mut [arg(&mut v), arg(&mut c)],
            )
            .unwrap();
            for at in 0..len {
                if at < 64 || at % 2 == 0 {
                    assert_eq!(values[at], at as f32 + 0.5, "{order:?}: value {at}");
                    assert_eq!(counts[at], at as i32, "{order:?}: count {at}");
                } else {
                    assert_eq!(values[at].to_bits(), u32::MAX, "{order:?}: value {at} is all ones (NaN)");
                    assert_eq!(counts[at], -1, "{order:?}: count {at}");
                }
            }
        }
    })
    .join()
    .unwrap();
}

#[test]
fn shuffles_follow_cuda_lane_arithmetic() {
    for order in ORDERS {
        kernels::set_thread_order_for_this_thread(Some(order));
        shuffles_in_every_width(order);
    }
}

fn shuffles_in_every_width(order: ThreadOrder) {
    for width in [32i32, 8, 4, 1] {
        let threads = 64usize;
        let mut out = vec![i32::MIN; threads * 6];
        let (mut w, mut o) = (width, out.as_mut_ptr());
        launch_self_test(
            "dp_emu_selftest_shuffles",
            [1, 1, 1],
            [threads as u32, 1, 1],
            &mut [arg(&mut w), arg(&mut o)],
        )
        .unwrap();
        let w = width as usize;
        let value = |warp: usize, lane: usize| ((warp * 32 + lane) * 10 + 1) as i32;
        for t in 0..threads {
            let (warp, lane) = (t / 32, t % 32);
            let group = lane / w * w;
            let up = if lane - group >= 2 { lane - 2 } else { lane };
            let down = if lane - group + 5 < w { lane + 5 } else { lane };
            // A later group's lane gives the caller's own value.
            let xor = if (lane ^ 6) / w > lane / w { lane } else { lane ^ 6 };
            let ballot = (0..32).filter(|l| l % 3 == 0).fold(0u32, |b, l| b | 1 << l) as i32;
            let expected = [
                value(warp, group + 3 % w),
                value(warp, up),
                value(warp, down),
                value(warp, xor),
                ballot,
                value(warp, lane ^ 1),
            ];
            assert_eq!(out[t * 6..t * 6 + 6], expected, "{order:?}: thread {t}, width {width}");
        }
    }
}

#[test]
fn exited_threads_count_as_arrived_at_syncthreads() {
    for order in ORDERS {
        kernels::set_thread_order_for_this_thread(Some(order));
        let (threads, active) = (256usize, 100u32);
        let mut out = vec![u32::MAX; threads];
        let (mut a, mut o) = (active, out.as_mut_ptr());
        launch_self_test(
            "dp_emu_selftest_barriers_after_exit",
            [2, 1, 1],
            [threads as u32, 1, 1],
            &mut [arg(&mut a), arg(&mut o)],
        )
        .unwrap();
        for (t, &v) in out.iter().enumerate() {
            let expected = if t < active as usize {
                (0..3).map(|round| (t as u32 + 1) % active + 1000 * round).sum()
            } else {
                u32::MAX
            };
            assert_eq!(v, expected, "{order:?}: thread {t}");
        }
    }
}

#[test]
fn misused_collectives_are_launch_errors_not_hangs() {
    // What each error says whichever thread meets the misuse first: the lanes that arrived before
    // it, and so the wording, depend on the order.
    let cases: [(&str, u32, &[&str]); 4] = [
        ("dp_emu_selftest_shuffle_after_exit", 32, &["exited"]),
        (
            "dp_emu_selftest_mixed_barriers",
            64,
            &["deadlock", "wait at __syncthreads", "wait at __shfl_xor_sync"],
        ),
        (
            "dp_emu_selftest_mismatched_collectives",
            32,
            &["with mask 0xffffffff while lanes", "__ballot_sync", "__shfl_xor_sync"],
        ),
        ("dp_emu_selftest_full_mask_in_small_block", 16, &["which the block (16 threads) does not have"]),
    ];
    for order in ORDERS {
        kernels::set_thread_order_for_this_thread(Some(order));
        // Every block fails: the error is the first block's to run.
        let first_block = match order {
            ThreadOrder::Forward => "block (0, 0, 0)",
            ThreadOrder::Reverse => "block (1, 0, 0)",
            ThreadOrder::Shuffled | ThreadOrder::Warps => "block (",
        };
        for (name, threads, says) in cases {
            let mut out = vec![0i32; threads as usize];
            let mut o = out.as_mut_ptr();
            let error = launch_self_test(name, [2, 1, 1], [threads, 1, 1], &mut [arg(&mut o)]).unwrap_err();
            println!("{order:?}: {error}");
            assert_eq!(error.kind, LaunchErrorKind::ExecutionFailed, "{error}");
            assert!(
                says.iter().all(|s| error.message.contains(s)) && error.message.contains(first_block),
                "{order:?}, {name}: {error}"
            );
        }
        // The OS thread's scheduler is whole again after the abandoned blocks.
        let mut dst = vec![1.0f32; 3000];
        let mut src = vec![2.0f32; 3000];
        let (mut d, mut s, mut n) = (values(&mut dst), values(&mut src), 3000u64);
        launch("dp_add_into", elementwise(3000), BLOCK_256, &mut [arg(&mut d), arg(&mut s), arg(&mut n)]);
        assert!(dst.iter().all(|&v| v == 3.0));
    }
}

/// The atomics self-test's counters: f32, f64, u32, u64, and the largest thread index.
#[derive(Default)]
struct Counters {
    f: f32,
    d: f64,
    u: u32,
    ull: u64,
    max: i32,
}

fn count_atomically(counters: *mut Counters, blocks: u32) {
    // SAFETY: the fields of a live Counters.
    let (mut f, mut d, mut u, mut ull, mut max) = unsafe {
        (
            &raw mut (*counters).f,
            &raw mut (*counters).d,
            &raw mut (*counters).u,
            &raw mut (*counters).ull,
            &raw mut (*counters).max,
        )
    };
    launch_self_test(
        "dp_emu_selftest_atomics",
        [blocks, 1, 1],
        BLOCK_256,
        &mut [arg(&mut f), arg(&mut d), arg(&mut u), arg(&mut ull), arg(&mut max)],
    )
    .unwrap();
}

#[test]
fn atomics_are_atomic_across_concurrent_launches() {
    let mut counters = Counters::default();
    count_atomically(&mut counters, 40);
    assert_eq!(
        (counters.f, counters.d, counters.u, counters.ull, counters.max),
        (10240.0, 5120.0, 10240, 10240 << 32, 10239)
    );

    // Four OS threads (four streams) launching at once into the same counters.
    let mut shared = Counters::default();
    let address = &mut shared as *mut Counters as usize;
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(move || {
                for _ in 0..5 {
                    count_atomically(address as *mut Counters, 8);
                }
            });
        }
    });
    let total = 4 * 5 * 8 * 256;
    assert_eq!(
        (shared.f, shared.d, shared.u, shared.ull),
        (total as f32, total as f64 / 2.0, total, (total as u64) << 32)
    );
}

#[test]
fn concurrent_launches_keep_their_shared_memory_apart() {
    let (n, weight_len) = (6usize, 2500usize);
    std::thread::scope(|scope| {
        for seed in 0..3u64 {
            scope.spawn(move || {
                let mut weight = random_values(n * weight_len, 100 + seed);
                for _ in 0..3 {
                    let norms = kept_sq_norms(&mut weight, weight_len, None, n, n as u32);
                    for (i, &norm) in norms.iter().enumerate() {
                        let exact = squares(&weight[i * weight_len..(i + 1) * weight_len]);
                        assert_close(
                            f64::from(norm),
                            exact,
                            exact,
                            1e-5,
                            &format!("thread {seed}, example {i}"),
                        );
                    }
                }
            });
        }
    });
}

#[test]
fn time_a_large_elementwise_launch() {
    let len = 16usize << 20;
    let mut dst = vec![1.0f32; len];
    let mut src = vec![0.5f32; len];
    let (mut d, mut s, mut n) = (values(&mut dst), values(&mut src), len as u64);
    // One thread per value (65 536 blocks), then dp-cuda's elementwise geometry (8192 blocks, 8 values a thread).
    for (grid, what) in
        [([(len / 256) as u32, 1, 1], "a thread per value"), (elementwise(len), "dp-cuda's elementwise")]
    {
        let threads = grid[0] as usize * 256;
        let start = Instant::now();
        launch("dp_add_into", grid, BLOCK_256, &mut [arg(&mut d), arg(&mut s), arg(&mut n)]);
        let elapsed = start.elapsed();
        println!(
            "dp_add_into over {len} values, {what}: {threads} threads in {elapsed:?}, {:.1} ns per thread, {:.2} ns per value",
            elapsed.as_nanos() as f64 / threads as f64,
            elapsed.as_nanos() as f64 / len as f64
        );
    }
    assert!(dst.iter().all(|&v| v == 2.0));

    // A block-reduction kernel: 64 examples of 100 000 values, blocks of 1024 threads with barriers.
    let (examples, width) = (64usize, 100_000usize);
    let mut weight = random_values(examples * width, 5);
    let start = Instant::now();
    kept_sq_norms(&mut weight, width, None, examples, examples as u32);
    let elapsed = start.elapsed();
    println!(
        "dp_kept_sq_norms over {examples} x {width}: {elapsed:?}, {:.1} ns per thread",
        elapsed.as_nanos() as f64 / (examples * 1024) as f64
    );
}

#[test]
fn group_norm_forward_normalises_each_unit_with_f64_block_sums() {
    // NormDims {channels, plane, groups}, as norm.cu's dp_group_norm_dims.
    #[repr(C)]
    struct NormDims {
        channels: u64,
        plane: u64,
        groups: u64,
    }
    let (n, channels, plane, groups) = (3usize, 6usize, 25usize, 2usize);
    let len = channels / groups * plane;
    let units = n * groups;
    let mut x: Vec<f32> = random_values(n * channels * plane, 50).iter().map(|v| v * 3.0 + 1.0).collect();
    let mut weight = random_values(channels, 51);
    let mut bias = random_values(channels, 52);
    let (mut y, mut mean, mut rstd) = (vec![0.0f32; x.len()], vec![0.0f32; units], vec![0.0f32; units]);
    let (mut xv, mut d, mut n64) = (
        values(&mut x),
        NormDims { channels: channels as u64, plane: plane as u64, groups: groups as u64 },
        n as u64,
    );
    let (mut w, mut b) = (weight.as_mut_ptr(), bias.as_mut_ptr());
    let (mut yv, mut m, mut r) = (values(&mut y), values(&mut mean), values(&mut rstd));
    // dp-cuda's per_unit(units, len): whole warps up to 256 threads, one block per unit.
    let threads = len.div_ceil(32).clamp(1, 8) as u32 * 32;
    launch(
        "dp_group_norm_forward",
        [units as u32, 1, 1],
        [threads, 1, 1],
        &mut [
            arg(&mut xv),
            arg(&mut d),
            arg(&mut n64),
            arg(&mut w),
            arg(&mut b),
            arg(&mut yv),
            arg(&mut m),
            arg(&mut r),
        ],
    );
    for u in 0..units {
        let unit = &x[u * len..(u + 1) * len];
        let mu = unit.iter().map(|&v| f64::from(v)).sum::<f64>() / len as f64;
        let var = unit.iter().map(|&v| (f64::from(v) - mu).powi(2)).sum::<f64>() / len as f64;
        let rs = 1.0 / (var + f64::from(1e-5f32)).sqrt();
        assert_close(f64::from(mean[u]), mu, mu.abs(), 1e-6, &format!("mean of unit {u}"));
        assert_close(f64::from(rstd[u]), rs, rs, 1e-6, &format!("rstd of unit {u}"));
        for k in 0..len {
            let c = (u % groups) * (channels / groups) + k / plane;
            let exact = (f64::from(unit[k]) - mu) * rs * f64::from(weight[c]) + f64::from(bias[c]);
            assert_close(f64::from(y[u * len + k]), exact, 1.0, 1e-5, &format!("unit {u} value {k}"));
        }
    }
}

#[test]
fn views_average_squares_use_a_two_dimensional_grid() {
    // Three ranges of the gradient; blocks (b, r) of a 2 x 3 grid, 256 threads each.
    let (offsets, lens) = ([0u64, 1000, 1100], [1000u64, 100, 5000]);
    let total = 6100usize;
    let (blocks, views) = (2u64, 4.0f32);
    let mut grad = random_values(total, 60);
    let original = grad.clone();
    let mut partials = vec![f64::NAN; 3 * blocks as usize];
    let (mut g, mut inverse) = (grad.as_mut_ptr(), 1.0 / views);
    let (mut o, mut l, mut bl, mut p) = (offsets.as_ptr(), lens.as_ptr(), blocks, partials.as_mut_ptr());
    launch(
        "dp_views_average_squares",
        [blocks as u32, 3, 1],
        BLOCK_256,
        &mut [arg(&mut g), arg(&mut inverse), arg(&mut o), arg(&mut l), arg(&mut bl), arg(&mut p)],
    );
    for (i, (&averaged, &sum)) in grad.iter().zip(&original).enumerate() {
        assert_eq!(averaged, sum * inverse, "value {i}");
    }
    for r in 0..3 {
        let range = &grad[offsets[r] as usize..(offsets[r] + lens[r]) as usize];
        let exact: f64 = range.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        let got: f64 = partials[r * blocks as usize..(r + 1) * blocks as usize].iter().sum();
        assert_close(got, exact, exact, 1e-12, &format!("range {r}"));
    }
}

#[test]
fn lstm_fused_forward_matches_its_steps_bit_for_bit() {
    let (n, steps, h) = (3usize, 4usize, 40usize);
    let g4 = 4 * h;
    let gates_in: Vec<f32> = random_values(n * steps * g4, 70);
    let mut bias = random_values(g4, 71);
    let mut w_hh: Vec<f32> = random_values(g4 * h, 72).iter().map(|v| v * 0.3).collect();
    // The buffers a forward writes: gates (activated in place), cells, hprev, out, hidden, recurrent.
    let fresh = || {
        (
            gates_in.clone(),
            vec![0.0f32; n * steps * h],
            vec![0.0f32; n * steps * h],
            vec![0.0f32; n * steps * h],
            vec![0.0f32; n * h],
            vec![0.0f32; n * g4],
        )
    };

    let (mut gates, mut cells, mut hprev, mut out, mut hidden, mut recurrent) = fresh();
    let (mut ga, mut ce, mut hp, mut ou, mut hi, mut re) = (
        values(&mut gates),
        values(&mut cells),
        values(&mut hprev),
        values(&mut out),
        values(&mut hidden),
        values(&mut recurrent),
    );
    let (mut b, mut w, mut round) = (bias.as_mut_ptr(), w_hh.as_mut_ptr(), 0i32);
    let (mut n64, mut t64, mut h64) = (n as u64, steps as u64, h as u64);
    // dp-cuda's per_example(n): a block of LSTM_BLOCK_THREADS (512) per example.
    launch(
        "dp_lstm_forward_fused",
        [n as u32, 1, 1],
        [512, 1, 1],
        &mut [
            arg(&mut ga),
            arg(&mut ce),
            arg(&mut hp),
            arg(&mut ou),
            arg(&mut hi),
            arg(&mut re),
            arg(&mut b),
            arg(&mut w),
            arg(&mut round),
            arg(&mut n64),
            arg(&mut t64),
            arg(&mut h64),
        ],
    );

    let (mut s_gates, mut s_cells, mut s_hprev, mut s_out, mut s_hidden, mut s_recurrent) = fresh();
    for t in 0..steps {
        if t > 0 {
            // The recurrent product as lstm.cu's dp_lstm_recurrent_row forms it: f64 in k order.
            for i in 0..n {
                for r in 0..g4 {
                    let sum: f64 =
                        (0..h).map(|k| f64::from(s_hidden[i * h + k]) * f64::from(w_hh[r * h + k])).sum();
                    s_recurrent[i * g4 + r] = sum as f32;
                }
            }
        }
        let (mut ga, mut ce, mut hp, mut ou, mut hi, mut re) = (
            values(&mut s_gates),
            values(&mut s_cells),
            values(&mut s_hprev),
            values(&mut s_out),
            values(&mut s_hidden),
            values(&mut s_recurrent),
        );
        let mut t64 = t as u64;
        let mut total_steps = steps as u64;
        launch(
            "dp_lstm_forward_step",
            elementwise(n * h),
            BLOCK_256,
            &mut [
                arg(&mut ga),
                arg(&mut ce),
                arg(&mut hp),
                arg(&mut ou),
                arg(&mut hi),
                arg(&mut re),
                arg(&mut b),
                arg(&mut n64),
                arg(&mut total_steps),
                arg(&mut h64),
                arg(&mut t64),
            ],
        );
    }
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&gates), bits(&s_gates), "activated gates");
    assert_eq!(bits(&cells), bits(&s_cells), "cells");
    assert_eq!(bits(&hprev), bits(&s_hprev), "previous hidden states");
    assert_eq!(bits(&out), bits(&s_out), "outputs");
    assert_eq!(bits(&hidden), bits(&s_hidden), "last hidden state");
    assert!(out.iter().all(|v| v.is_finite() && v.abs() < 1.0));
}
