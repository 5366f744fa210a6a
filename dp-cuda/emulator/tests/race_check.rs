//! The race check (feature `race-check`): kernels/self_test_kernels.cpp's race kernels under
//! ThreadSanitizer. ThreadSanitizer reports to stderr and keeps its state for the whole process, so
//! this test (harness = false) runs each case as a child process of its own, with libtsan preloaded
//! and the TSAN_OPTIONS the check needs, and reads the child's stderr: a race where CUDA does not
//! order two threads' accesses, reported at the kernel's line, and none where it does. The child
//! loads the emulator as dp's programs do, with dlopen (cudarc): the check finds __shared__
//! variables in the thread-local storage glibc allocates for a library loaded so.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use dp_cuda_emulator::kernels;

/// Set in the child processes' environment: the case to run.
const CHILD: &str = "DP_EMU_RACE_CHECK_TEST_CHILD";

/// What the check needs of ThreadSanitizer (docs/GPU.md): reports of every race, not only the
/// first; no accesses recorded by the C library's interceptors (memcpy, memset, mmap), which the
/// emulator's uninstrumented Rust calls on threads whose order ThreadSanitizer cannot see.
const TSAN_OPTIONS: &str = "halt_on_error=0 exitcode=0 ignore_interceptors_accesses=1";

const RACE: &str = "WARNING: ThreadSanitizer: data race";

fn main() {
    if let Ok(case) = std::env::var(CHILD) {
        run_case(&case);
        println!("{case}: done");
        return;
    }
    let source = "self_test_kernels.cpp";
    let line_of = |text: &str| {
        let kernels = include_str!("../kernels/self_test_kernels.cpp");
        let at =
            kernels.lines().position(|l| l.contains(text)).unwrap_or_else(|| panic!("no line has {text}"));
        format!("{source}:{}", at + 1)
    };
    expect_race("plain_sum", &line_of("*sum += 1u;"));
    expect_no_race("atomic_sum");
    expect_race("shared_without_barrier", &line_of("if (t != 0) out[t] = value;"));
    expect_no_race("shared_with_barrier");
    expect_race("two_blocks_one_value", &line_of("if (linear_thread() == 0) *out = blockIdx.x;"));
    expect_no_race("launches_in_a_row");
    expect_no_race("launches_on_two_threads");
    for order in ["forward", "reverse", "shuffled", "warps"] {
        expect_no_race(&format!("barriers_{order}"));
    }
    println!("race_check: ok");
}

/// Runs `case` in a child process: its stderr, after checking that it ended well.
fn child(case: &str) -> String {
    let output = Command::new(std::env::current_exe().expect("this test's path"))
        .env(CHILD, case)
        .env("TSAN_OPTIONS", TSAN_OPTIONS)
        .env("LD_PRELOAD", libtsan())
        .output()
        .expect("running the child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success() && stdout.contains(&format!("{case}: done")), "{case}: {output:?}");
    stderr
}

/// ThreadSanitizer's runtime, as the C++ compiler names it (as build.rs links it).
fn libtsan() -> String {
    let output = Command::new(std::env::var("CXX").unwrap_or_else(|_| "c++".to_owned()))
        .arg("-print-file-name=libtsan.so")
        .output()
        .expect("running the C++ compiler for libtsan's path");
    String::from_utf8(output.stdout).expect("a path in UTF-8").trim().to_owned()
}

fn expect_race(case: &str, line: &str) {
    let stderr = child(case);
    assert!(stderr.contains(RACE), "{case}: no race reported:\n{stderr}");
    assert!(stderr.contains(line), "{case}: the report does not name {line}:\n{stderr}");
}

fn expect_no_race(case: &str) {
    let stderr = child(case);
    assert!(!stderr.contains("ThreadSanitizer"), "{case}: ThreadSanitizer reported:\n{stderr}");
}

fn arg<T>(value: &mut T) -> *mut c_void {
    (value as *mut T).cast()
}

type SetThreadOrder = unsafe extern "C" fn(c_int) -> c_int;

/// The emulator library cargo built beside this test, loaded with dlopen: the function `name`.
fn emulator_function(name: &str) -> *mut c_void {
    struct Library(usize);
    static LIBRARY: OnceLock<Library> = OnceLock::new();
    let library = LIBRARY.get_or_init(|| {
        let exe = std::env::current_exe().expect("this test's path");
        let path = exe.parent().expect("deps").join("libdp_cuda_emulator.so");
        let c_path = CString::new(path.to_str().expect("a UTF-8 path")).expect("no NUL");
        // SAFETY: a C string; the library stays loaded for the process.
        let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        assert!(!handle.is_null(), "dlopen {}", path.display());
        Library(handle as usize)
    });
    let c_name = CString::new(name).expect("no NUL");
    // SAFETY: a handle dlopen returned, and a C string.
    let function = unsafe { libc::dlsym(library.0 as *mut c_void, c_name.as_ptr()) };
    assert!(!function.is_null(), "{name} in the emulator library");
    function
}

fn launch(name: &str, grid: u32, block: u32, params: &mut [*mut c_void]) {
    // SAFETY: dp_emu_race_check_launch_self_test's signature (src/kernels.rs).
    let launch: kernels::LaunchFunction =
        unsafe { std::mem::transmute(emulator_function("dp_emu_race_check_launch_self_test")) };
    let c_name = CString::new(name).expect("no NUL");
    let mut error = [0 as c_char; 1024];
    // SAFETY: every case passes pointers to locals of the kernel's parameter types, and buffers as
    // long as the kernel reads and writes.
    let status = unsafe {
        launch(
            c_name.as_ptr(),
            grid,
            1,
            1,
            block,
            1,
            1,
            0,
            params.as_mut_ptr(),
            error.as_mut_ptr(),
            error.len(),
        )
    };
    // SAFETY: the launch leaves a C string in `error`.
    assert_eq!(status, 0, "{name}: {:?}", unsafe { CStr::from_ptr(error.as_ptr()) });
}

/// The order of this OS thread's launches, as DP_EMULATOR_THREAD_ORDER names them.
fn set_thread_order(order: &str) {
    let mode =
        ["forward", "reverse", "shuffled", "warps"].iter().position(|o| *o == order).expect("an order");
    // SAFETY: dp_emu_race_check_set_thread_order's signature (src/kernels.rs).
    let set: SetThreadOrder =
        unsafe { std::mem::transmute(emulator_function("dp_emu_race_check_set_thread_order")) };
    // SAFETY: any mode may be asked; 0 is success.
    assert_eq!(unsafe { set(mode as c_int) }, 0);
}

fn run_case(case: &str) {
    match case {
        "plain_sum" | "atomic_sum" => {
            let (mut atomic, mut sum) = (i32::from(case == "atomic_sum"), 0u32);
            let mut s = &mut sum as *mut u32;
            launch("dp_emu_selftest_race_sum", 1, 64, &mut [arg(&mut atomic), arg(&mut s)]);
            assert_eq!(sum, 64);
        }
        "shared_without_barrier" | "shared_with_barrier" => {
            let mut synchronise = i32::from(case == "shared_with_barrier");
            let mut out = vec![0u32; 64];
            let mut o = out.as_mut_ptr();
            launch("dp_emu_selftest_race_shared", 1, 64, &mut [arg(&mut synchronise), arg(&mut o)]);
        }
        "two_blocks_one_value" => {
            let mut out = 0u32;
            let mut o = &mut out as *mut u32;
            launch("dp_emu_selftest_race_blocks", 2, 32, &mut [arg(&mut o)]);
        }
        "launches_in_a_row" => {
            let (first, second) = copy_twice();
            first();
            second();
        }
        "launches_on_two_threads" => {
            // The second launch waits for the first on a flag that ThreadSanitizer does not see (Rust's
            // atomics are not instrumented), as a stream waits for another's event.
            let (first, second) = copy_twice();
            let done = AtomicBool::new(false);
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    first();
                    done.store(true, Ordering::Release);
                });
                scope.spawn(|| {
                    while !done.load(Ordering::Acquire) {
                        std::hint::spin_loop();
                    }
                    second();
                });
            });
        }
        _ if case.starts_with("barriers_") => {
            set_thread_order(&case["barriers_".len()..]);
            let (blocks, threads) = (6u32, 256u32);
            let mut out = vec![0u32; (blocks * threads / 32) as usize];
            let mut o = out.as_mut_ptr();
            launch("dp_emu_selftest_race_free_barriers", blocks, threads, &mut [arg(&mut o)]);
            for (w, &sum) in out.iter().enumerate() {
                let (block, first) = (w as u32 / (threads / 32), w as u32 % (threads / 32) * 32);
                // Lane l holds what lane l ^ 1 read: the slot of the thread after it.
                let expected: u32 = (first..first + 32).map(|t| ((t ^ 1) + 1) % threads + block).sum();
                assert_eq!(sum, expected, "warp {w}");
            }
        }
        other => panic!("no case {other}"),
    }
}

/// Two launches of dp_emu_selftest_race_free_copy over 4 blocks of 64 threads: the first from
/// `values` into `middle`, the second from `middle` into `out`, checked.
fn copy_twice() -> (impl Fn() + Sync, impl Fn() + Sync) {
    struct Buffers(Vec<u32>, Vec<u32>, Vec<u32>);
    let n = 256usize;
    let buffers = Box::leak(Box::new(Buffers((0..n as u32).collect(), vec![0; n], vec![0; n])));
    let (values, middle, out) =
        (buffers.0.as_mut_ptr() as usize, buffers.1.as_mut_ptr() as usize, buffers.2.as_mut_ptr() as usize);
    let copy = |from: usize, to: usize| {
        let (mut f, mut t) = (from as *mut u32, to as *mut u32);
        launch("dp_emu_selftest_race_free_copy", 4, 64, &mut [arg(&mut f), arg(&mut t)]);
    };
    (
        move || copy(values, middle),
        move || {
            copy(middle, out);
            // SAFETY: the leaked buffer of n values, which the launch has finished writing.
            let out = unsafe { std::slice::from_raw_parts(out as *const u32, n) };
            assert!(out.iter().enumerate().all(|(i, &v)| v == i as u32 + 2), "{out:?}");
        },
    )
}
