//! Kernel execution: dp-cuda's `kernels/*.cu`, compiled as C++ by build.rs against the CUDA execution
//! model of `kernels/cuda_on_cpu.hpp`, launched by name.
//!
//! A launch runs on the calling OS thread and has finished when [`launch`] returns: the blocks one
//! after the other, each block's threads as fibers, round robin, with `__syncthreads` and the warp
//! collectives as barriers among them, in the [`ThreadOrder`] of `DP_EMULATOR_THREAD_ORDER` or of
//! [`set_thread_order_for_this_thread`]. Every block finds its `__shared__` variables filled with
//! 0xff bytes. Several OS threads may launch at once (each has its own fibers and shared memory;
//! atomics are atomic across them). Device pointers are host pointers.

use std::ffi::{c_char, c_int, c_long, c_uint, c_void, CStr, CString};
use std::fmt;

extern "C" {
    fn dp_emu_launch(
        name: *const c_char,
        gx: c_uint,
        gy: c_uint,
        gz: c_uint,
        bx: c_uint,
        by: c_uint,
        bz: c_uint,
        dynamic_shared_bytes: c_uint,
        params: *mut *mut c_void,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn dp_emu_launch_self_test(
        name: *const c_char,
        gx: c_uint,
        gy: c_uint,
        gz: c_uint,
        bx: c_uint,
        by: c_uint,
        bz: c_uint,
        dynamic_shared_bytes: c_uint,
        params: *mut *mut c_void,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn dp_emu_set_thread_order_for_this_thread(mode: c_int) -> c_int;
    fn dp_emu_has_kernel(name: *const c_char) -> c_int;
    fn dp_emu_kernel_count() -> usize;
    fn dp_emu_kernel_name(index: usize) -> *const c_char;
    fn dp_emu_kernel_params(
        name: *const c_char,
        sizes: *mut usize,
        alignments: *mut usize,
        capacity: usize,
    ) -> c_long;
}

/// Why a launch did not run to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchErrorKind {
    /// No kernel of that name (`CUDA_ERROR_NOT_FOUND` on a GPU).
    UnknownKernel,
    /// A grid or block dimension of 0 or beyond CUDA's limits, or dynamic shared memory
    /// (`CUDA_ERROR_INVALID_VALUE`); or a `DP_EMULATOR_THREAD_ORDER` or `DP_EMULATOR_SEED` the
    /// emulator does not accept.
    InvalidConfiguration,
    /// The kernel used a barrier or warp collective as CUDA does not allow: a deadlock, a collective
    /// naming a lane that exited or does not exist, lanes disagreeing (`CUDA_ERROR_LAUNCH_FAILED`;
    /// on a GPU, a hang or undefined results).
    ExecutionFailed,
}

/// A launch's error: its kind and what went wrong, naming the kernel (and the block and thread).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchError {
    /// Which of the errors.
    pub kind: LaunchErrorKind,
    /// The emulator's message.
    pub message: String,
}

impl fmt::Display for LaunchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LaunchError {}

/// The size and alignment of one kernel parameter: what a driver copies out of `kernelParams[i]` when
/// it queues the launch for later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamLayout {
    /// `sizeof` the parameter's type.
    pub size: usize,
    /// `alignof` the parameter's type.
    pub align: usize,
}

/// The order in which a launch runs its blocks, and each block's threads between barriers
/// (`DP_EMULATOR_THREAD_ORDER`, read once; forward when unset). CUDA promises no order: a kernel
/// whose results depend on it (a missing `__syncthreads`, a block reading what another block of the
/// launch writes) is wrong, and the orders other than forward show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadOrder {
    /// `forward`: blocks in order of `blockIdx`, threads in order of `threadIdx` (x fastest).
    Forward,
    /// `reverse`: the last block first, and each pass over a block's threads from its last to its
    /// first.
    Reverse,
    /// `shuffled`: a pseudo-random permutation of the grid's blocks, and a fresh one of the block's
    /// threads for each pass over them. Deterministic: the same launches on an OS thread get the same
    /// permutations, under the same `DP_EMULATOR_SEED` (an unsigned 64-bit number, 0 when unset).
    Shuffled,
    /// `warps`: the blocks as `shuffled`'s; each pass takes the block's warps in a fresh
    /// pseudo-random order and runs each as far as it can go (until its lanes wait at
    /// `__syncthreads` or have ended) before the next, so one warp may pass several warp collectives
    /// while the others wait, as on a GPU. The other orders let every thread take one step per pass.
    Warps,
}

/// The order of the launches the calling OS thread makes from now on, or `None`: the environment's
/// (`DP_EMULATOR_THREAD_ORDER`). For tests, which share a process and its environment.
pub fn set_thread_order_for_this_thread(order: Option<ThreadOrder>) {
    let mode = match order {
        None => -1,
        Some(ThreadOrder::Forward) => 0,
        Some(ThreadOrder::Reverse) => 1,
        Some(ThreadOrder::Shuffled) => 2,
        Some(ThreadOrder::Warps) => 3,
    };
    // SAFETY: takes an int and sets a thread-local; every mode here is one it accepts.
    let status = unsafe { dp_emu_set_thread_order_for_this_thread(mode) };
    assert_eq!(status, 0, "thread order {mode} refused");
}

/// Runs kernel `name` of dp-cuda/kernels over `grid` blocks of `block` threads (x, y, z), returning
/// when it has finished.
///
/// # Safety
/// `params` must point to one pointer per kernel parameter, each to a value of that parameter's type
/// (as `cuLaunchKernel`'s `kernelParams`), valid until the launch returns; every pointer among those
/// values must be valid for what the kernel reads and writes through it.
pub unsafe fn launch(
    name: &str,
    grid: [u32; 3],
    block: [u32; 3],
    dynamic_shared_bytes: u32,
    params: *mut *mut c_void,
) -> Result<(), String> {
    // SAFETY: the caller's guarantees are launch_detailed's.
    unsafe { launch_detailed(name, grid, block, dynamic_shared_bytes, params) }.map_err(|e| e.message)
}

/// [`launch`], telling the kinds of error apart.
///
/// # Safety
/// As [`launch`].
pub unsafe fn launch_detailed(
    name: &str,
    grid: [u32; 3],
    block: [u32; 3],
    dynamic_shared_bytes: u32,
    params: *mut *mut c_void,
) -> Result<(), LaunchError> {
    // SAFETY: as the caller guarantees.
    unsafe { launch_through(dp_emu_launch, name, grid, block, dynamic_shared_bytes, params) }
}

/// [`launch_detailed`] for the emulator's own test kernels (`kernels/self_test_kernels.cpp`): the
/// CUDA semantics and launch errors that dp's kernels exercise only when they are wrong.
///
/// # Safety
/// As [`launch`], for the test kernel's parameters.
pub unsafe fn launch_self_test(
    name: &str,
    grid: [u32; 3],
    block: [u32; 3],
    params: *mut *mut c_void,
) -> Result<(), LaunchError> {
    // SAFETY: as the caller guarantees.
    unsafe { launch_through(dp_emu_launch_self_test, name, grid, block, 0, params) }
}

/// The C signature of the launch functions (launch.cpp's `dp_emu_launch` and
/// `dp_emu_launch_self_test`, and the race check's export of the latter): the kernel's name, the
/// grid and the block, the dynamic shared bytes, the parameters, and a buffer for the error.
pub type LaunchFunction = unsafe extern "C" fn(
    *const c_char,
    c_uint,
    c_uint,
    c_uint,
    c_uint,
    c_uint,
    c_uint,
    c_uint,
    *mut *mut c_void,
    *mut c_char,
    usize,
) -> c_int;

unsafe fn launch_through(
    function: LaunchFunction,
    name: &str,
    grid: [u32; 3],
    block: [u32; 3],
    dynamic_shared_bytes: u32,
    params: *mut *mut c_void,
) -> Result<(), LaunchError> {
    let Ok(c_name) = CString::new(name) else {
        return Err(LaunchError {
            kind: LaunchErrorKind::UnknownKernel,
            message: format!("no kernel named {name:?} (a NUL in the name)"),
        });
    };
    let mut error = vec![0u8; 1024];
    // SAFETY: the name is a C string, the error buffer as long as we say, and the parameters as the
    // caller guarantees.
    let status = unsafe {
        function(
            c_name.as_ptr(),
            grid[0],
            grid[1],
            grid[2],
            block[0],
            block[1],
            block[2],
            dynamic_shared_bytes,
            params,
            error.as_mut_ptr().cast(),
            error.len(),
        )
    };
    let kind = match status {
        0 => return Ok(()),
        1 => LaunchErrorKind::UnknownKernel,
        2 => LaunchErrorKind::InvalidConfiguration,
        _ => LaunchErrorKind::ExecutionFailed,
    };
    let message =
        CStr::from_bytes_until_nul(&error).map(|m| m.to_string_lossy().into_owned()).unwrap_or_default();
    Err(LaunchError { kind, message })
}

/// Whether dp-cuda/kernels has a kernel (an `extern "C" __global__` function) of that name.
pub fn has_kernel(name: &str) -> bool {
    let Ok(c_name) = CString::new(name) else { return false };
    // SAFETY: a C string.
    unsafe { dp_emu_has_kernel(c_name.as_ptr()) != 0 }
}

/// Every kernel of dp-cuda/kernels: files in name order, each file's kernels in source order.
pub fn kernel_names() -> Vec<&'static str> {
    // SAFETY: the names are string literals of the generated registry, static and NUL-terminated.
    (0..unsafe { dp_emu_kernel_count() })
        .map(|i| unsafe { CStr::from_ptr(dp_emu_kernel_name(i)) }.to_str().expect("kernel names are ASCII"))
        .collect()
}

/// The layout of each parameter of kernel `name`, in order; `None` when there is no such kernel.
pub fn param_layouts(name: &str) -> Option<Vec<ParamLayout>> {
    let c_name = CString::new(name).ok()?;
    // SAFETY: a C string, and a capacity of 0 writes nothing.
    let count =
        unsafe { dp_emu_kernel_params(c_name.as_ptr(), std::ptr::null_mut(), std::ptr::null_mut(), 0) };
    let count = usize::try_from(count).ok()?;
    let (mut sizes, mut alignments) = (vec![0usize; count], vec![0usize; count]);
    // SAFETY: both buffers hold `count` values.
    unsafe { dp_emu_kernel_params(c_name.as_ptr(), sizes.as_mut_ptr(), alignments.as_mut_ptr(), count) };
    Some(sizes.into_iter().zip(alignments).map(|(size, align)| ParamLayout { size, align }).collect())
}

/// The self-test launch exported from the library for tests/race_check.rs, which loads the library
/// with dlopen as dp's programs do: `dp_emu_launch_self_test` (launch.cpp), whose symbol the library
/// does not export.
///
/// # Safety
/// As `dp_emu_launch_self_test`: `name` a C string, `params` as [`launch`]'s, `error` writable for
/// `error_len` bytes.
#[cfg(feature = "race-check")]
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn dp_emu_race_check_launch_self_test(
    name: *const c_char,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    dynamic_shared_bytes: c_uint,
    params: *mut *mut c_void,
    error: *mut c_char,
    error_len: usize,
) -> c_int {
    // SAFETY: as the caller guarantees.
    unsafe {
        dp_emu_launch_self_test(name, gx, gy, gz, bx, by, bz, dynamic_shared_bytes, params, error, error_len)
    }
}

/// [`set_thread_order_for_this_thread`] exported for tests/race_check.rs: 0 forward, 1 reverse, 2
/// shuffled, 3 warps, -1 the environment's; returns 0, or -1 for another mode.
#[cfg(feature = "race-check")]
#[no_mangle]
pub extern "C" fn dp_emu_race_check_set_thread_order(mode: c_int) -> c_int {
    // SAFETY: any mode may be asked.
    unsafe { dp_emu_set_thread_order_for_this_thread(mode) }
}
