//! The emulated driver and cuBLAS through their C entry points, as cudarc calls them: copies in
//! stream order, events between streams, capture's rules (a fork not joined, a wait on an event from
//! outside, a synchronising call while capturing), graphs replayed, ranges outside allocations
//! refused, and the products against a plain loop.

use std::ffi::c_void;
use std::ptr::null_mut;

use dp_cuda_emulator::api::*;
use dp_cuda_emulator::blas::*;

fn ok(code: CUresult) {
    assert_eq!(code, CUDA_SUCCESS);
}

fn stream() -> *mut c_void {
    let mut s = null_mut();
    // SAFETY: writes one handle.
    ok(unsafe { cuStreamCreate(&mut s, 1) });
    s
}

fn event() -> *mut c_void {
    let mut e = null_mut();
    // SAFETY: writes one handle.
    ok(unsafe { cuEventCreate(&mut e, 2) });
    e
}

fn device(bytes: usize) -> u64 {
    let mut p = 0;
    // SAFETY: writes one address.
    ok(unsafe { cuMemAlloc_v2(&mut p, bytes) });
    p
}

fn pinned(bytes: usize) -> *mut f32 {
    let mut p = null_mut();
    // SAFETY: writes one address.
    ok(unsafe { cuMemHostAlloc(&mut p, bytes, 0) });
    p as *mut f32
}

/// A pinned buffer holding `values`.
fn pinned_holding(values: &[f32]) -> *mut f32 {
    let host = pinned(values.len() * 4);
    // SAFETY: the pinned buffer's values.len() values.
    unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), host, values.len()) };
    host
}

fn upload(s: *mut c_void, values: &[f32]) -> u64 {
    let d = device(values.len() * 4);
    // SAFETY: a pageable source of the copy's length, into the allocation just made.
    ok(unsafe { cuMemcpyHtoDAsync_v2(d, values.as_ptr() as *const c_void, values.len() * 4, s) });
    d
}

fn download(s: *mut c_void, d: u64, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; n];
    // SAFETY: a pageable destination of the copy's length (the call returns once it has run).
    ok(unsafe { cuMemcpyDtoHAsync_v2(out.as_mut_ptr() as *mut c_void, d, n * 4, s) });
    out
}

#[test]
fn fresh_device_memory_reads_as_nan_and_copies_run_in_stream_order() {
    let s = stream();
    let d = device(16);
    assert!(download(s, d, 4).iter().all(|v| v.is_nan()), "unwritten device memory is NaN");
    let d = upload(s, &[1.0, 2.0, 3.0, 4.0]);
    let e = device(16);
    // SAFETY: both ranges are the 16-byte allocations above.
    ok(unsafe { cuMemcpyDtoDAsync_v2(e, d, 16, s) });
    assert_eq!(download(s, e, 4), [1.0, 2.0, 3.0, 4.0]);
    ok(cuStreamSynchronize(s));
}

#[test]
fn copies_outside_an_allocation_are_refused() {
    let s = stream();
    let d = device(16);
    let host = [0f32; 8];
    // SAFETY: refused before anything is read.
    let code = unsafe { cuMemcpyHtoDAsync_v2(d + 8, host.as_ptr() as *const c_void, 16, s) };
    assert_eq!(code, CUDA_ERROR_INVALID_VALUE, "8 bytes past the end");
    // SAFETY: as above.
    let code = unsafe { cuMemcpyHtoDAsync_v2(host.as_ptr() as u64, host.as_ptr() as *const c_void, 4, s) };
    assert_eq!(code, CUDA_ERROR_INVALID_VALUE, "a host address as the device side");
    assert_eq!(cuMemsetD8Async(d, 0, 17, s), CUDA_ERROR_INVALID_VALUE);
}

#[test]
fn a_pinned_buffer_is_read_when_its_copy_runs_and_events_order_two_streams() {
    let (a, b) = (stream(), stream());
    let gate = event();
    let host = pinned(16);
    let d = device(16);
    // Stream a waits on an event that stream b records only after a long copy chain; the pinned
    // buffer is written by the host in between: the copy on a reads it when it runs.
    let filler = device(1 << 26);
    let big = vec![0u8; 1 << 26];
    // SAFETY: a pageable source of the allocation's length.
    ok(unsafe { cuMemcpyHtoDAsync_v2(filler, big.as_ptr() as *const c_void, 1 << 26, b) });
    ok(cuEventRecord(gate, b));
    ok(cuStreamWaitEvent(a, gate, 0));
    // SAFETY: pinned source and device destination of 16 bytes.
    ok(unsafe { cuMemcpyHtoDAsync_v2(d, host as *const c_void, 16, a) });
    // SAFETY: the pinned buffer's 4 values.
    unsafe { std::ptr::copy_nonoverlapping([5.0f32, 6.0, 7.0, 8.0].as_ptr(), host, 4) };
    ok(cuStreamSynchronize(a));
    assert_eq!(
        download(a, d, 4),
        [5.0, 6.0, 7.0, 8.0],
        "the copy ran after the host's write, behind the event"
    );
    ok(cuEventQuery(gate));
}

#[test]
fn captures_replay_their_work_and_refuse_what_the_driver_refuses() {
    let (origin, side) = (stream(), stream());
    let (fork, join) = (event(), event());
    let d = upload(origin, &[0.0; 4]);
    ok(cuStreamSynchronize(origin));
    let host = pinned_holding(&[1.0, 2.0, 3.0, 4.0]);

    // A fork joined back: the graph holds the side stream's copy, and replays it.
    ok(cuStreamBeginCapture_v2(origin, 1));
    ok(cuEventRecord(fork, origin));
    ok(cuStreamWaitEvent(side, fork, 0));
    // SAFETY: pinned source, device destination, 16 bytes.
    ok(unsafe { cuMemcpyHtoDAsync_v2(d, host as *const c_void, 16, side) });
    ok(cuEventRecord(join, side));
    ok(cuStreamWaitEvent(origin, join, 0));
    assert_eq!(cuEventQuery(join), CUDA_ERROR_CAPTURED_EVENT);
    let mut graph = null_mut();
    // SAFETY: writes one handle.
    ok(unsafe { cuStreamEndCapture(origin, &mut graph) });
    assert_eq!(download(origin, d, 4), [0.0; 4], "captured work does not run");
    let mut exec = null_mut();
    // SAFETY: writes one handle.
    ok(unsafe { cuGraphInstantiateWithFlags(&mut exec, graph, 0) });
    ok(cuGraphLaunch(exec, origin));
    assert_eq!(download(origin, d, 4), [1.0, 2.0, 3.0, 4.0]);
    // SAFETY: the pinned buffer's first value.
    unsafe { *host = 9.0 };
    ok(cuGraphLaunch(exec, origin));
    assert_eq!(download(origin, d, 4)[0], 9.0, "a replay reads the pinned buffer again");

    // A fork not joined: the capture ends in an error.
    ok(cuStreamBeginCapture_v2(origin, 1));
    ok(cuEventRecord(fork, origin));
    ok(cuStreamWaitEvent(side, fork, 0));
    // SAFETY: as above.
    ok(unsafe { cuMemcpyHtoDAsync_v2(d, host as *const c_void, 16, side) });
    // SAFETY: writes one handle.
    assert_eq!(unsafe { cuStreamEndCapture(origin, &mut graph) }, CUDA_ERROR_STREAM_CAPTURE_UNJOINED);

    // A wait on an event recorded outside the capture.
    let outside = event();
    ok(cuEventRecord(outside, side));
    ok(cuStreamBeginCapture_v2(origin, 1));
    assert_eq!(cuStreamWaitEvent(origin, outside, 0), CUDA_ERROR_STREAM_CAPTURE_ISOLATION);
    // SAFETY: writes one handle.
    assert_eq!(unsafe { cuStreamEndCapture(origin, &mut graph) }, CUDA_ERROR_STREAM_CAPTURE_INVALIDATED);

    // A synchronising call from the capturing thread invalidates the capture.
    ok(cuStreamBeginCapture_v2(origin, 1));
    assert_eq!(cuStreamSynchronize(side), CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
    // SAFETY: writes one handle.
    assert_eq!(unsafe { cuStreamEndCapture(origin, &mut graph) }, CUDA_ERROR_STREAM_CAPTURE_INVALIDATED);
    ok(cuStreamSynchronize(side));
}

/// Set in the child processes of the test below, which runs itself once per late schedule (the
/// schedule is read once per process).
const GRAPH_ORDER_CHILD: &str = "DP_EMULATOR_TEST_GRAPH_ORDER_CHILD";

#[test]
fn a_dependency_missing_inside_a_graph_shows_under_the_later_schedule() {
    if std::env::var_os(GRAPH_ORDER_CHILD).is_some() {
        return replay_a_graph_with_a_missing_dependency();
    }
    let name = "a_dependency_missing_inside_a_graph_shows_under_the_later_schedule";
    let run = |schedule: Option<&str>| -> (Vec<f32>, Vec<f32>) {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        child.args(["--exact", name, "--nocapture", "--test-threads=1"]).env(GRAPH_ORDER_CHILD, "1");
        match schedule {
            Some(s) => child.env("DP_EMULATOR_LATE_STREAMS", s),
            None => child.env_remove("DP_EMULATOR_LATE_STREAMS"),
        };
        let out = child.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{schedule:?}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        let read = |label: &str| -> Vec<f32> {
            // The harness's "test NAME ... " may begin the line.
            let line = stdout
                .lines()
                .find_map(|l| l.find(label).map(|at| &l[at + label.len()..]))
                .unwrap_or_else(|| panic!("{stdout}"));
            line.split_whitespace().map(|v| v.parse().unwrap()).collect()
        };
        (read("read before the join: "), read("read after the join: "))
    };
    let written = vec![1.0, 2.0, 3.0, 4.0];
    // In capture order the side stream's copy, captured first, happens to run before the read that
    // does not wait for it: the missing dependency passes.
    assert_eq!(run(None), (written.clone(), written.clone()));
    assert_eq!(run(Some("earlier")), (written.clone(), written.clone()));
    // Under `later` the origin's nodes go first wherever the edges let them: the read sees the old
    // values. The joined read is right under every schedule.
    assert_eq!(run(Some("later")), (vec![0.0; 4], written));
}

/// The child of the test above: the origin reads what a forked stream writes, once without waiting
/// for it (the missing dependency) and once after joining it, inside one graph.
fn replay_a_graph_with_a_missing_dependency() {
    // The origin is made first: `later` runs its nodes before the side stream's.
    let (origin, side) = (stream(), stream());
    let (fork, join) = (event(), event());
    let written = upload(origin, &[0.0; 4]);
    let (unjoined, joined) = (device(16), device(16));
    ok(cuStreamSynchronize(origin));
    let host = pinned_holding(&[1.0, 2.0, 3.0, 4.0]);
    ok(cuStreamBeginCapture_v2(origin, 1));
    ok(cuEventRecord(fork, origin));
    ok(cuStreamWaitEvent(side, fork, 0));
    // SAFETY: pinned source, device destination, 16 bytes.
    ok(unsafe { cuMemcpyHtoDAsync_v2(written, host as *const c_void, 16, side) });
    // SAFETY: two allocations of 16 bytes.
    ok(unsafe { cuMemcpyDtoDAsync_v2(unjoined, written, 16, origin) });
    ok(cuEventRecord(join, side));
    ok(cuStreamWaitEvent(origin, join, 0));
    // SAFETY: as above.
    ok(unsafe { cuMemcpyDtoDAsync_v2(joined, written, 16, origin) });
    let (mut graph, mut exec) = (null_mut(), null_mut());
    // SAFETY: each writes one handle.
    ok(unsafe { cuStreamEndCapture(origin, &mut graph) });
    // SAFETY: as above.
    ok(unsafe { cuGraphInstantiateWithFlags(&mut exec, graph, 0) });
    ok(cuGraphLaunch(exec, origin));
    let show = |values: Vec<f32>| values.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(" ");
    println!("read before the join: {}", show(download(origin, unjoined, 4)));
    println!("read after the join: {}", show(download(origin, joined, 4)));
}

/// `C = alpha·op(A)·op(B) + beta·C`, column-major, as cuBLAS defines it, in f64.
#[allow(clippy::too_many_arguments)]
fn reference(
    ta: bool,
    tb: bool,
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) {
    for j in 0..n {
        for i in 0..m {
            let mut sum = 0f64;
            for p in 0..k {
                let av = if ta { a[p + i * lda] } else { a[i + p * lda] };
                let bv = if tb { b[j + p * ldb] } else { b[p + j * ldb] };
                sum += f64::from(av) * f64::from(bv);
            }
            let cell = &mut c[i + j * ldc];
            *cell = alpha * sum as f32 + if beta == 0.0 { 0.0 } else { beta * *cell };
        }
    }
}

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n).map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 1000) as f32 / 250.0 - 2.0).collect()
}

#[test]
fn products_equal_a_plain_loop_with_transposes_strides_and_bf16() {
    let s = stream();
    let mut handle = null_mut();
    // SAFETY: writes one handle.
    assert_eq!(unsafe { cublasCreate_v2(&mut handle) }, 0);
    assert_eq!(cublasSetStream_v2(handle, s), 0);
    let (m, n, k) = (5, 7, 3);
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let (lda, ldb, ldc) = (if ta { k } else { m } + 1, if tb { n } else { k } + 2, m + 1);
        let a = values(lda * if ta { m } else { k }, 1);
        let b = values(ldb * if tb { k } else { n }, 2);
        let c0 = values(ldc * n, 3);
        let mut expected = c0.clone();
        reference(ta, tb, (m, n, k), 0.5, &a, lda, &b, ldb, 2.0, &mut expected, ldc);
        let (da, db, dc) = (upload(s, &a), upload(s, &b), upload(s, &c0));
        let (alpha, beta) = (0.5f32, 2.0f32);
        // SAFETY: operands of the sizes the leading dimensions reach, in device memory.
        let status = unsafe {
            cublasSgemm_v2(
                handle,
                ta as u32,
                tb as u32,
                m as i32,
                n as i32,
                k as i32,
                &alpha,
                da as *const f32,
                lda as i32,
                db as *const f32,
                ldb as i32,
                &beta,
                dc as *mut f32,
                ldc as i32,
            )
        };
        assert_eq!(status, 0);
        let got = download(s, dc, ldc * n);
        for (g, e) in got.iter().zip(&expected) {
            assert!((g - e).abs() <= 1e-5 * e.abs().max(1.0), "{ta} {tb}: {g} against {e}");
        }
        // A leading dimension cuBLAS refuses.
        // SAFETY: refused before anything is read.
        let status = unsafe {
            cublasSgemm_v2(
                handle,
                ta as u32,
                tb as u32,
                m as i32,
                n as i32,
                k as i32,
                &alpha,
                da as *const f32,
                1,
                db as *const f32,
                ldb as i32,
                &beta,
                dc as *mut f32,
                ldc as i32,
            )
        };
        assert_eq!(status, 7);
    }

    // Strided batches, beta 0 over NaN (C is not read).
    let batch = 3;
    let a = values(m * k * batch, 4);
    let b = values(k * n * batch, 5);
    let (da, db) = (upload(s, &a), upload(s, &b));
    let dc = device(m * n * batch * 4);
    let (alpha, beta) = (1.0f32, 0.0f32);
    // SAFETY: the three batches of each operand lie in their allocations.
    let status = unsafe {
        cublasSgemmStridedBatched(
            handle,
            0,
            0,
            m as i32,
            n as i32,
            k as i32,
            &alpha,
            da as *const f32,
            m as i32,
            (m * k) as i64,
            db as *const f32,
            k as i32,
            (k * n) as i64,
            &beta,
            dc as *mut f32,
            m as i32,
            (m * n) as i64,
            batch as i32,
        )
    };
    assert_eq!(status, 0);
    let got = download(s, dc, m * n * batch);
    for e in 0..batch {
        let mut expected = vec![f32::NAN; m * n];
        reference(
            false,
            false,
            (m, n, k),
            1.0,
            &a[e * m * k..],
            m,
            &b[e * k * n..],
            k,
            0.0,
            &mut expected,
            m,
        );
        for (g, x) in got[e * m * n..(e + 1) * m * n].iter().zip(&expected) {
            assert!((g - x).abs() <= 1e-5 * x.abs().max(1.0), "batch {e}: {g} against {x}");
        }
    }
    // A batch that reaches past B's allocation is refused.
    // SAFETY: refused before anything is read.
    let status = unsafe {
        cublasSgemmStridedBatched(
            handle,
            0,
            0,
            m as i32,
            n as i32,
            k as i32,
            &alpha,
            da as *const f32,
            m as i32,
            (m * k) as i64,
            db as *const f32,
            k as i32,
            (k * n + 1) as i64,
            &beta,
            dc as *mut f32,
            m as i32,
            (m * n) as i64,
            batch as i32,
        )
    };
    assert_eq!(status, 7);

    // bf16 operands and output; and f32 operands rounded to bf16 by the FAST_16BF compute type.
    let to_bf16 = |v: &[f32]| v.iter().map(|&x| half::bf16::from_f32(x)).collect::<Vec<_>>();
    let a = values(m * k, 6).iter().map(|x| x + 1e-3).collect::<Vec<_>>();
    let b = values(k * n, 7);
    let (ab, bb) = (to_bf16(&a), to_bf16(&b));
    let rounded = |v: &[half::bf16]| v.iter().map(|x| x.to_f32()).collect::<Vec<_>>();
    let mut expected = vec![0f32; m * n];
    reference(false, false, (m, n, k), 1.0, &rounded(&ab), m, &rounded(&bb), k, 0.0, &mut expected, m);
    let bytes = |v: &[half::bf16]| v.iter().map(|x| x.to_bits()).collect::<Vec<u16>>();
    let (da16, db16) = (device(m * k * 2), device(k * n * 2));
    // SAFETY: pageable sources of the allocations' lengths.
    unsafe {
        ok(cuMemcpyHtoDAsync_v2(da16, bytes(&ab).as_ptr() as *const c_void, m * k * 2, s));
        ok(cuMemcpyHtoDAsync_v2(db16, bytes(&bb).as_ptr() as *const c_void, k * n * 2, s));
    }
    let dc16 = device(m * n * 2);
    // SAFETY: bf16 operands and output of these sizes; alpha and beta f32 as COMPUTE_32F requires.
    let status = unsafe {
        cublasGemmEx(
            handle,
            0,
            0,
            m as i32,
            n as i32,
            k as i32,
            &alpha as *const f32 as *const c_void,
            da16 as *const c_void,
            14,
            m as i32,
            db16 as *const c_void,
            14,
            k as i32,
            &beta as *const f32 as *const c_void,
            dc16 as *mut c_void,
            14,
            m as i32,
            68,
            -1,
        )
    };
    assert_eq!(status, 0);
    let mut got16 = vec![0u16; m * n];
    // SAFETY: a pageable destination of the allocation's length.
    ok(unsafe { cuMemcpyDtoHAsync_v2(got16.as_mut_ptr() as *mut c_void, dc16, m * n * 2, s) });
    for (g, x) in got16.iter().zip(&expected) {
        assert_eq!(*g, half::bf16::from_f32(*x).to_bits(), "bf16 output rounded once from the f32 sum");
    }
    let (da, db) = (upload(s, &a), upload(s, &b));
    let dc = device(m * n * 4);
    // SAFETY: f32 operands and output.
    let status = unsafe {
        cublasGemmEx(
            handle,
            0,
            0,
            m as i32,
            n as i32,
            k as i32,
            &alpha as *const f32 as *const c_void,
            da as *const c_void,
            0,
            m as i32,
            db as *const c_void,
            0,
            k as i32,
            &beta as *const f32 as *const c_void,
            dc as *mut c_void,
            0,
            m as i32,
            75,
            -1,
        )
    };
    assert_eq!(status, 0);
    let got = download(s, dc, m * n);
    for (g, x) in got.iter().zip(&expected) {
        assert!(
            (g - x).abs() <= 1e-6 * x.abs().max(1.0),
            "FAST_16BF rounds its f32 operands: {g} against {x}"
        );
    }
}

#[test]
fn products_refuse_overlapping_outputs_and_unsupported_types_but_allow_interleaved_members() {
    let s = stream();
    let mut handle = null_mut();
    // SAFETY: writes one handle.
    assert_eq!(unsafe { cublasCreate_v2(&mut handle) }, 0);
    assert_eq!(cublasSetStream_v2(handle, s), 0);
    let (m, n, k) = (2usize, 2usize, 3usize);
    let a = upload(s, &values(64, 8));
    let b = upload(s, &values(64, 9));
    let c = device(64 * 4);
    let (alpha, beta) = (1.0f32, 0.0f32);
    let call = |ldc: usize, stride_c: usize| {
        // SAFETY: every reach lies inside the 64-value allocations (checked by the emulator first).
        unsafe {
            cublasSgemmStridedBatched(
                handle,
                0,
                0,
                m as i32,
                n as i32,
                k as i32,
                &alpha,
                a as *const f32,
                m as i32,
                0,
                b as *const f32,
                k as i32,
                0,
                &beta,
                c as *mut f32,
                ldc as i32,
                stride_c as i64,
                2,
            )
        }
    };
    assert_eq!(call(4, 4), 7, "members {{0,1,4,5}} and {{4,5,8,9}} overlap");
    assert_eq!(call(4, 2), 0, "interleaved members, a head's columns inside wider rows");
    assert_eq!(call(2, 4), 0, "members one after the other");
    // bf16 A with f32 B: not a combination cuBLAS supports.
    // SAFETY: refused before anything is read.
    let status = unsafe {
        cublasGemmEx(
            handle,
            0,
            0,
            m as i32,
            n as i32,
            k as i32,
            &alpha as *const f32 as *const c_void,
            a as *const c_void,
            14,
            m as i32,
            b as *const c_void,
            0,
            k as i32,
            &beta as *const f32 as *const c_void,
            c as *mut c_void,
            0,
            m as i32,
            68,
            -1,
        )
    };
    assert_eq!(status, 15);
}
