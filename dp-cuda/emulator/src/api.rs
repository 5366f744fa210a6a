//! The CUDA driver API's entry points that dp-cuda (through cudarc) calls, by their exported names.
//! One emulated device, `cuda:0`, reporting compute capability 9.0 so that NVRTC compiles for sm_90.

#![allow(non_snake_case, clippy::missing_safety_doc)]

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_uint, c_ulonglong, c_void, CStr};
use std::sync::{Arc, LazyLock};

use crate::capture::Capture;
use crate::launch::{Function, Launch, Module};
use crate::memory::Kind;
use crate::state::{self, Handles};
use crate::stream::{Event, Op, Stream};

/// The driver's result codes this library returns.
pub type CUresult = u32;
pub const CUDA_SUCCESS: CUresult = 0;
pub const CUDA_ERROR_INVALID_VALUE: CUresult = 1;
pub const CUDA_ERROR_OUT_OF_MEMORY: CUresult = 2;
pub const CUDA_ERROR_NOT_INITIALIZED: CUresult = 3;
pub const CUDA_ERROR_INVALID_DEVICE: CUresult = 101;
pub const CUDA_ERROR_INVALID_IMAGE: CUresult = 200;
pub const CUDA_ERROR_INVALID_HANDLE: CUresult = 400;
pub const CUDA_ERROR_NOT_FOUND: CUresult = 500;
pub const CUDA_ERROR_NOT_READY: CUresult = 600;
pub const CUDA_ERROR_ILLEGAL_ADDRESS: CUresult = 700;
pub const CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES: CUresult = 701;
pub const CUDA_ERROR_LAUNCH_FAILED: CUresult = 719;
pub const CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED: CUresult = 900;
pub const CUDA_ERROR_STREAM_CAPTURE_INVALIDATED: CUresult = 901;
pub const CUDA_ERROR_STREAM_CAPTURE_UNJOINED: CUresult = 904;
pub const CUDA_ERROR_STREAM_CAPTURE_ISOLATION: CUresult = 905;
pub const CUDA_ERROR_CAPTURED_EVENT: CUresult = 907;
pub const CUDA_ERROR_NOT_SUPPORTED: CUresult = 801;

/// The device's name, which every GPU test prints.
pub const DEVICE_NAME: &str = "dp emulated GPU (the CPU, dp-cuda-emulator: not a GPU)";

static STREAMS: Handles<Stream> = Handles::new();
static EVENTS: Handles<Event> = Handles::new();
static GRAPHS: Handles<Vec<Op>> = Handles::new();
static MODULES: Handles<Module> = Handles::new();
static FUNCTIONS: Handles<Function> = Handles::new();
/// The legacy default stream (handle 0): its work runs after every other stream's, on the calling
/// thread's turn, as the legacy stream synchronises with the blocking streams.
static LEGACY: LazyLock<Arc<Stream>> = LazyLock::new(|| Stream::start(0));

const CONTEXT: usize = 0xc0;

thread_local! {
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

/// An error said on stderr (the driver's codes say little) and returned.
fn refuse(code: CUresult, why: impl std::fmt::Display) -> CUresult {
    state::say(&format!("refused ({code}): {why}"));
    code
}

/// What real CUDA allows and this library does not model: the device fails (a sticky error, said on
/// stderr), so that no test passes by dp falling back on another path (graphs off) after a refusal.
fn not_emulated(what: &str) -> CUresult {
    state::fail(format!("{what} is allowed by CUDA but not emulated"));
    CUDA_ERROR_NOT_SUPPORTED
}

fn sticky() -> Option<CUresult> {
    state::failed().then_some(CUDA_ERROR_LAUNCH_FAILED)
}

macro_rules! check_sticky {
    () => {
        if let Some(code) = sticky() {
            return code;
        }
    };
}

fn stream(h: *mut c_void) -> Result<Arc<Stream>, CUresult> {
    let h = h as usize;
    if h == 0 {
        return Ok(Arc::clone(&LEGACY));
    }
    STREAMS.get(h).ok_or_else(|| refuse(CUDA_ERROR_INVALID_HANDLE, format!("no stream {h:#x}")))
}

/// Refuses a call that would synchronise with a capture begun on this thread, and invalidates it
/// (capture mode "thread local").
fn forbidden_in_capture(what: &str) -> Result<(), CUresult> {
    let me = std::thread::current().id();
    for s in STREAMS.all() {
        if let Some(capture) = s.capture() {
            let mut c = capture.lock().unwrap();
            if c.thread == me {
                c.invalidate(format!("{what} during the capture"));
                return Err(refuse(
                    CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED,
                    format!("{what} while this thread captures"),
                ));
            }
        }
    }
    Ok(())
}

/// Queues `op` on stream `h`; on the legacy stream, runs it after every other stream's work.
fn submit(h: *mut c_void, op: Op) -> CUresult {
    let s = match stream(h) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if s.id == 0 {
        if let Err(code) = forbidden_in_capture("work on the legacy stream") {
            return code;
        }
        for other in STREAMS.all() {
            other.synchronize();
        }
        s.enqueue(op);
        s.synchronize();
        return sticky().unwrap_or(CUDA_SUCCESS);
    }
    s.enqueue(op);
    CUDA_SUCCESS
}

// ---- Initialisation, device and context ----

#[no_mangle]
pub extern "C" fn cuInit(_flags: c_uint) -> CUresult {
    CUDA_SUCCESS
}

/// The driver's private tables, which NVRTC asks a loaded `libcuda.so.1` for: none here, so that
/// NVRTC compiles without them (as on a machine without a driver).
#[no_mangle]
pub unsafe extern "C" fn cuGetExportTable(table: *mut *const c_void, _id: *const c_void) -> CUresult {
    if !table.is_null() {
        *table = std::ptr::null();
    }
    CUDA_ERROR_NOT_SUPPORTED
}

#[no_mangle]
pub unsafe extern "C" fn cuDriverGetVersion(version: *mut c_int) -> CUresult {
    *version = 12080;
    CUDA_SUCCESS
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetCount(count: *mut c_int) -> CUresult {
    *count = 1;
    CUDA_SUCCESS
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGet(device: *mut c_int, ordinal: c_int) -> CUresult {
    if ordinal != 0 {
        return CUDA_ERROR_INVALID_DEVICE;
    }
    *device = 0;
    CUDA_SUCCESS
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetName(name: *mut c_char, len: c_int, device: c_int) -> CUresult {
    if device != 0 || len <= 0 {
        return CUDA_ERROR_INVALID_VALUE;
    }
    let bytes = DEVICE_NAME.as_bytes();
    let n = bytes.len().min(len as usize - 1);
    std::ptr::copy_nonoverlapping(bytes.as_ptr(), name as *mut u8, n);
    *name.add(n) = 0;
    CUDA_SUCCESS
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetAttribute(
    value: *mut c_int,
    attribute: c_uint,
    device: c_int,
) -> CUresult {
    if device != 0 {
        return CUDA_ERROR_INVALID_DEVICE;
    }
    *value = match attribute {
        1 => 1024,       // MAX_THREADS_PER_BLOCK
        2 => 1024,       // MAX_BLOCK_DIM_X
        3 => 1024,       // MAX_BLOCK_DIM_Y
        4 => 64,         // MAX_BLOCK_DIM_Z
        5 => i32::MAX,   // MAX_GRID_DIM_X
        6 | 7 => 65_535, // MAX_GRID_DIM_Y, _Z
        8 => 48 * 1024,  // MAX_SHARED_MEMORY_PER_BLOCK
        10 => 32,        // WARP_SIZE
        16 => 132,       // MULTIPROCESSOR_COUNT
        75 => 9,         // COMPUTE_CAPABILITY_MAJOR
        76 => 0,         // COMPUTE_CAPABILITY_MINOR
        39 => 2048,      // MAX_THREADS_PER_MULTIPROCESSOR
        115 => 1,        // MEMORY_POOLS_SUPPORTED
        other => {
            return refuse(CUDA_ERROR_INVALID_VALUE, format!("device attribute {other} is not emulated"))
        }
    };
    CUDA_SUCCESS
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceTotalMem_v2(bytes: *mut usize, device: c_int) -> CUresult {
    if device != 0 {
        return CUDA_ERROR_INVALID_DEVICE;
    }
    *bytes = crate::memory::capacity();
    CUDA_SUCCESS
}

#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxRetain(context: *mut *mut c_void, device: c_int) -> CUresult {
    if device != 0 {
        return CUDA_ERROR_INVALID_DEVICE;
    }
    *context = CONTEXT as *mut c_void;
    CUDA_SUCCESS
}

#[no_mangle]
pub extern "C" fn cuDevicePrimaryCtxRelease_v2(_device: c_int) -> CUresult {
    CUDA_SUCCESS
}

#[no_mangle]
pub extern "C" fn cuCtxSetCurrent(context: *mut c_void) -> CUresult {
    CURRENT.with(|c| c.set(context as usize));
    CUDA_SUCCESS
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxGetCurrent(context: *mut *mut c_void) -> CUresult {
    *context = CURRENT.with(|c| c.get()) as *mut c_void;
    CUDA_SUCCESS
}

#[no_mangle]
pub extern "C" fn cuCtxSynchronize() -> CUresult {
    if let Err(code) = forbidden_in_capture("cuCtxSynchronize") {
        return code;
    }
    for s in STREAMS.all() {
        s.synchronize();
    }
    sticky().unwrap_or(CUDA_SUCCESS)
}

#[no_mangle]
pub unsafe extern "C" fn cuGetErrorName(error: CUresult, text: *mut *const c_char) -> CUresult {
    *text = error_text(error).as_ptr();
    CUDA_SUCCESS
}

#[no_mangle]
pub unsafe extern "C" fn cuGetErrorString(error: CUresult, text: *mut *const c_char) -> CUresult {
    *text = error_text(error).as_ptr();
    CUDA_SUCCESS
}

fn error_text(error: CUresult) -> &'static CStr {
    match error {
        CUDA_SUCCESS => c"CUDA_SUCCESS",
        CUDA_ERROR_INVALID_VALUE => c"CUDA_ERROR_INVALID_VALUE",
        CUDA_ERROR_OUT_OF_MEMORY => c"CUDA_ERROR_OUT_OF_MEMORY",
        CUDA_ERROR_INVALID_HANDLE => c"CUDA_ERROR_INVALID_HANDLE",
        CUDA_ERROR_NOT_READY => c"CUDA_ERROR_NOT_READY",
        CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES => c"CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES",
        CUDA_ERROR_LAUNCH_FAILED => c"CUDA_ERROR_LAUNCH_FAILED (dp-cuda-emulator: see its message above)",
        CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED => c"CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED",
        CUDA_ERROR_STREAM_CAPTURE_INVALIDATED => c"CUDA_ERROR_STREAM_CAPTURE_INVALIDATED",
        CUDA_ERROR_STREAM_CAPTURE_UNJOINED => c"CUDA_ERROR_STREAM_CAPTURE_UNJOINED",
        CUDA_ERROR_STREAM_CAPTURE_ISOLATION => c"CUDA_ERROR_STREAM_CAPTURE_ISOLATION",
        CUDA_ERROR_CAPTURED_EVENT => c"CUDA_ERROR_CAPTURED_EVENT",
        _ => c"a CUDA error (dp-cuda-emulator)",
    }
}

// ---- Memory ----

#[no_mangle]
pub unsafe extern "C" fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) -> CUresult {
    let total_bytes = crate::memory::capacity();
    *total = total_bytes;
    *free = total_bytes.saturating_sub(state::memory().device_bytes());
    CUDA_SUCCESS
}

unsafe fn allocate(pointer: *mut c_ulonglong, bytes: usize, kind: Kind) -> CUresult {
    if bytes == 0 {
        return CUDA_ERROR_INVALID_VALUE;
    }
    match state::memory().allocate(bytes, kind) {
        Some(at) => {
            *pointer = at as c_ulonglong;
            CUDA_SUCCESS
        }
        None => CUDA_ERROR_OUT_OF_MEMORY,
    }
}

#[no_mangle]
pub unsafe extern "C" fn cuMemAlloc_v2(pointer: *mut c_ulonglong, bytes: usize) -> CUresult {
    check_sticky!();
    if let Err(code) = forbidden_in_capture("cuMemAlloc") {
        return code;
    }
    allocate(pointer, bytes, Kind::Device)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemAllocAsync(
    pointer: *mut c_ulonglong,
    bytes: usize,
    h: *mut c_void,
) -> CUresult {
    check_sticky!();
    match stream(h) {
        Ok(s) if s.capture().is_some() => return not_emulated("cuMemAllocAsync inside a capture"),
        Ok(_) => {}
        Err(code) => return code,
    }
    allocate(pointer, bytes, Kind::Device)
}

#[no_mangle]
pub extern "C" fn cuMemFree_v2(pointer: c_ulonglong) -> CUresult {
    if let Err(code) = forbidden_in_capture("cuMemFree") {
        return code;
    }
    for s in STREAMS.all() {
        s.synchronize();
    }
    freed(state::memory().free(pointer as usize, Kind::Device), "cuMemFree")
}

#[no_mangle]
pub extern "C" fn cuMemFreeAsync(pointer: c_ulonglong, h: *mut c_void) -> CUresult {
    match stream(h) {
        Ok(s) if s.capture().is_some() => not_emulated("cuMemFreeAsync inside a capture"),
        Ok(_) => submit(h, Op::Free { start: pointer as usize }),
        Err(code) => code,
    }
}

#[no_mangle]
pub unsafe extern "C" fn cuMemHostAlloc(pointer: *mut *mut c_void, bytes: usize, _flags: c_uint) -> CUresult {
    let mut at = 0;
    let code = allocate(&mut at, bytes, Kind::Pinned);
    *pointer = at as *mut c_void;
    code
}

#[no_mangle]
pub extern "C" fn cuMemFreeHost(pointer: *mut c_void) -> CUresult {
    if let Err(code) = forbidden_in_capture("cuMemFreeHost") {
        return code;
    }
    // Freeing pinned memory waits for the device, as the driver's does.
    for s in STREAMS.all() {
        s.synchronize();
    }
    freed(state::memory().free(pointer as usize, Kind::Pinned), "cuMemFreeHost")
}

/// A free's result: a write found past the allocation's ends fails the device (as the write would
/// have, or would have corrupted a neighbour, on a GPU); freeing what is not allocated is refused.
fn freed(result: Result<(), String>, what: &str) -> CUresult {
    match result {
        Ok(()) => CUDA_SUCCESS,
        Err(why) if why.starts_with("something wrote") => {
            state::fail(format!("{what}: {why}"));
            CUDA_ERROR_ILLEGAL_ADDRESS
        }
        Err(why) => refuse(CUDA_ERROR_INVALID_VALUE, format!("{what}: {why}")),
    }
}

/// Which side of a copy is which.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Host,
    Device,
}

/// Checks a copy's ranges and queues it: device ranges must lie in a live device allocation; a
/// host range in pinned memory is read or written when the copy runs, in pageable memory the
/// driver's staging is modelled (read when queued, written before the call returns).
unsafe fn copy(
    dst: usize,
    dst_side: Side,
    src: usize,
    src_side: Side,
    bytes: usize,
    h: *mut c_void,
    sync: bool,
) -> CUresult {
    check_sticky!();
    if bytes == 0 {
        return CUDA_SUCCESS;
    }
    let (dst_kind, src_kind) = {
        let memory = state::memory();
        let dst_kind = memory.holder(dst, bytes);
        let src_kind = memory.holder(src, bytes);
        for (side, kind, at) in [(dst_side, dst_kind, dst), (src_side, src_kind, src)] {
            if side == Side::Device && kind != Some(Kind::Device) {
                return refuse(
                    CUDA_ERROR_INVALID_VALUE,
                    format!(
                        "a copy's device range is not in one device allocation: {}",
                        memory.describe(at, bytes)
                    ),
                );
            }
            if side == Side::Host && kind == Some(Kind::Device) {
                return refuse(
                    CUDA_ERROR_INVALID_VALUE,
                    format!("a copy's host range is device memory: {at:#x}"),
                );
            }
        }
        (dst_kind, src_kind)
    };
    let s = match stream(h) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let pageable_src = src_side == Side::Host && src_kind.is_none();
    let pageable_dst = dst_side == Side::Host && dst_kind.is_none();
    if (pageable_src || pageable_dst) && s.capture().is_some() {
        return refuse(
            CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED,
            "a copy from or to pageable host memory inside a capture",
        );
    }
    if sync {
        if let Err(code) = forbidden_in_capture("a synchronous copy") {
            return code;
        }
    }
    let op = if pageable_src {
        Op::Staged { dst, bytes: Arc::new(std::slice::from_raw_parts(src as *const u8, bytes).to_vec()) }
    } else {
        Op::Copy { dst, src, bytes }
    };
    let code = submit(h, op);
    if code != CUDA_SUCCESS {
        return code;
    }
    if sync || pageable_dst {
        s.synchronize();
    }
    sticky().unwrap_or(CUDA_SUCCESS)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemcpyHtoDAsync_v2(
    dst: c_ulonglong,
    src: *const c_void,
    n: usize,
    h: *mut c_void,
) -> CUresult {
    copy(dst as usize, Side::Device, src as usize, Side::Host, n, h, false)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoHAsync_v2(
    dst: *mut c_void,
    src: c_ulonglong,
    n: usize,
    h: *mut c_void,
) -> CUresult {
    copy(dst as usize, Side::Host, src as usize, Side::Device, n, h, false)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoDAsync_v2(
    dst: c_ulonglong,
    src: c_ulonglong,
    n: usize,
    h: *mut c_void,
) -> CUresult {
    copy(dst as usize, Side::Device, src as usize, Side::Device, n, h, false)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemcpyHtoD_v2(dst: c_ulonglong, src: *const c_void, n: usize) -> CUresult {
    copy(dst as usize, Side::Device, src as usize, Side::Host, n, std::ptr::null_mut(), true)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoH_v2(dst: *mut c_void, src: c_ulonglong, n: usize) -> CUresult {
    copy(dst as usize, Side::Host, src as usize, Side::Device, n, std::ptr::null_mut(), true)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoD_v2(dst: c_ulonglong, src: c_ulonglong, n: usize) -> CUresult {
    copy(dst as usize, Side::Device, src as usize, Side::Device, n, std::ptr::null_mut(), true)
}

#[no_mangle]
pub extern "C" fn cuMemsetD8Async(dst: c_ulonglong, value: u8, n: usize, h: *mut c_void) -> CUresult {
    check_sticky!();
    if n > 0 && !state::memory().is_device(dst as usize, n) {
        return refuse(
            CUDA_ERROR_INVALID_VALUE,
            format!("a memset outside a device allocation: {}", state::memory().describe(dst as usize, n)),
        );
    }
    submit(h, Op::Fill { dst: dst as usize, value, bytes: n })
}

#[no_mangle]
pub extern "C" fn cuMemsetD8_v2(dst: c_ulonglong, value: u8, n: usize) -> CUresult {
    if let Err(code) = forbidden_in_capture("a synchronous memset") {
        return code;
    }
    let code = cuMemsetD8Async(dst, value, n, std::ptr::null_mut());
    if code != CUDA_SUCCESS {
        return code;
    }
    LEGACY.synchronize();
    sticky().unwrap_or(CUDA_SUCCESS)
}

// ---- Streams and events ----

#[no_mangle]
pub unsafe extern "C" fn cuStreamCreate(h: *mut *mut c_void, _flags: c_uint) -> CUresult {
    let id = state::handle();
    STREAMS.insert_at(id, Stream::start(id));
    *h = id as *mut c_void;
    CUDA_SUCCESS
}

#[no_mangle]
pub extern "C" fn cuStreamDestroy_v2(h: *mut c_void) -> CUresult {
    match STREAMS.remove(h as usize) {
        // The driver lets queued work finish; the thread ends after it.
        Some(s) => {
            s.close();
            CUDA_SUCCESS
        }
        None => refuse(CUDA_ERROR_INVALID_HANDLE, format!("cuStreamDestroy of {:#x}", h as usize)),
    }
}

#[no_mangle]
pub extern "C" fn cuStreamSynchronize(h: *mut c_void) -> CUresult {
    let s = match stream(h) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if let Some(capture) = s.capture() {
        capture.lock().unwrap().invalidate("cuStreamSynchronize of a capturing stream".into());
        return refuse(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, "cuStreamSynchronize of a capturing stream");
    }
    if let Err(code) = forbidden_in_capture("cuStreamSynchronize") {
        return code;
    }
    s.synchronize();
    sticky().unwrap_or(CUDA_SUCCESS)
}

#[no_mangle]
pub extern "C" fn cuStreamQuery(h: *mut c_void) -> CUresult {
    match stream(h) {
        Ok(s) if s.is_idle() => sticky().unwrap_or(CUDA_SUCCESS),
        Ok(_) => CUDA_ERROR_NOT_READY,
        Err(code) => code,
    }
}

#[no_mangle]
pub unsafe extern "C" fn cuEventCreate(h: *mut *mut c_void, flags: c_uint) -> CUresult {
    // CU_EVENT_DISABLE_TIMING = 2
    *h = EVENTS.insert(Arc::new(Event::new(flags & 2 == 0))) as *mut c_void;
    CUDA_SUCCESS
}

#[no_mangle]
pub extern "C" fn cuEventDestroy_v2(h: *mut c_void) -> CUresult {
    match EVENTS.remove(h as usize) {
        Some(_) => CUDA_SUCCESS,
        None => refuse(CUDA_ERROR_INVALID_HANDLE, format!("cuEventDestroy of {:#x}", h as usize)),
    }
}

fn event(h: *mut c_void) -> Result<Arc<Event>, CUresult> {
    EVENTS
        .get(h as usize)
        .ok_or_else(|| refuse(CUDA_ERROR_INVALID_HANDLE, format!("no event {:#x}", h as usize)))
}

#[no_mangle]
pub extern "C" fn cuEventRecord(e: *mut c_void, h: *mut c_void) -> CUresult {
    check_sticky!();
    let (e, s) = match (event(e), stream(h)) {
        (Ok(e), Ok(s)) => (e, s),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    if let Some(capture) = s.capture() {
        e.record_captured(Capture::record(&capture, s.id));
        return CUDA_SUCCESS;
    }
    let record = e.next_record();
    submit(h, Op::Record { event: e, record })
}

#[no_mangle]
pub extern "C" fn cuStreamWaitEvent(h: *mut c_void, e: *mut c_void, _flags: c_uint) -> CUresult {
    check_sticky!();
    let (e, s) = match (event(e), stream(h)) {
        (Ok(e), Ok(s)) => (e, s),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    match e.last() {
        Err(captured) => {
            if let Some(mine) = s.capture() {
                if !Arc::ptr_eq(&mine, &captured.capture) {
                    return refuse(
                        CUDA_ERROR_STREAM_CAPTURE_ISOLATION,
                        "a wait on an event of another capture",
                    );
                }
            }
            match Capture::wait(&captured.capture, &s, &captured) {
                Ok(()) => CUDA_SUCCESS,
                Err(why) => refuse(CUDA_ERROR_INVALID_VALUE, why),
            }
        }
        Ok(record) => {
            if let Some(capture) = s.capture() {
                capture.lock().unwrap().invalidate("a wait on an event recorded outside the capture".into());
                return refuse(
                    CUDA_ERROR_STREAM_CAPTURE_ISOLATION,
                    "a capturing stream waits on an event recorded outside the capture",
                );
            }
            submit(h, Op::Wait { event: e, record })
        }
    }
}

#[no_mangle]
pub extern "C" fn cuEventSynchronize(e: *mut c_void) -> CUresult {
    let e = match event(e) {
        Ok(e) => e,
        Err(code) => return code,
    };
    match e.last() {
        Err(_) => refuse(CUDA_ERROR_CAPTURED_EVENT, "cuEventSynchronize of an event recorded in a capture"),
        Ok(record) => {
            if let Err(code) = forbidden_in_capture("cuEventSynchronize") {
                return code;
            }
            e.wait_for(record);
            sticky().unwrap_or(CUDA_SUCCESS)
        }
    }
}

#[no_mangle]
pub extern "C" fn cuEventQuery(e: *mut c_void) -> CUresult {
    let e = match event(e) {
        Ok(e) => e,
        Err(code) => return code,
    };
    match e.last() {
        Err(_) => refuse(CUDA_ERROR_CAPTURED_EVENT, "cuEventQuery of an event recorded in a capture"),
        Ok(record) if e.is_complete(record) => sticky().unwrap_or(CUDA_SUCCESS),
        Ok(_) => CUDA_ERROR_NOT_READY,
    }
}

#[no_mangle]
pub unsafe extern "C" fn cuEventElapsedTime(ms: *mut f32, start: *mut c_void, end: *mut c_void) -> CUresult {
    let (start, end) = match (event(start), event(end)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    if !start.timing || !end.timing {
        return CUDA_ERROR_INVALID_HANDLE;
    }
    match (start.completed_at(), end.completed_at()) {
        (Some((r0, c0, t0)), Some((r1, c1, t1))) if c0 >= r0 && c1 >= r1 => {
            *ms = t1.saturating_duration_since(t0).as_secs_f32() * 1e3;
            CUDA_SUCCESS
        }
        _ => CUDA_ERROR_NOT_READY,
    }
}

#[no_mangle]
pub unsafe extern "C" fn cuEventElapsedTime_v2(
    ms: *mut f32,
    start: *mut c_void,
    end: *mut c_void,
) -> CUresult {
    cuEventElapsedTime(ms, start, end)
}

// ---- Capture and graphs ----

#[no_mangle]
pub extern "C" fn cuStreamBeginCapture_v2(h: *mut c_void, _mode: c_uint) -> CUresult {
    let s = match stream(h) {
        Ok(s) if s.id != 0 => s,
        Ok(_) => return refuse(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, "capturing the legacy stream"),
        Err(code) => return code,
    };
    if s.capture().is_some() {
        return refuse(CUDA_ERROR_INVALID_VALUE, "cuStreamBeginCapture of a stream already capturing");
    }
    Capture::begin(&s);
    CUDA_SUCCESS
}

#[no_mangle]
pub unsafe extern "C" fn cuStreamEndCapture(h: *mut c_void, graph: *mut *mut c_void) -> CUresult {
    let s = match stream(h) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let Some(capture) = s.capture() else {
        return refuse(CUDA_ERROR_INVALID_VALUE, "cuStreamEndCapture of a stream not capturing");
    };
    if capture.lock().unwrap().origin != s.id {
        return refuse(
            CUDA_ERROR_INVALID_VALUE,
            "cuStreamEndCapture on a stream other than the capture's origin",
        );
    }
    match Capture::end(&capture) {
        Ok(nodes) => {
            *graph = GRAPHS.insert(Arc::new(nodes)) as *mut c_void;
            CUDA_SUCCESS
        }
        Err((code, why)) => {
            *graph = std::ptr::null_mut();
            refuse(code, why)
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn cuStreamIsCapturing(h: *mut c_void, status: *mut c_uint) -> CUresult {
    match stream(h) {
        Ok(s) => {
            *status = match s.capture() {
                None => 0,
                Some(c) if c.lock().unwrap().invalid.is_some() => 2,
                Some(_) => 1,
            };
            CUDA_SUCCESS
        }
        Err(code) => code,
    }
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphInstantiateWithFlags(
    exec: *mut *mut c_void,
    graph: *mut c_void,
    _flags: c_ulonglong,
) -> CUresult {
    match GRAPHS.get(graph as usize) {
        Some(nodes) => {
            *exec = GRAPHS.insert(Arc::new(nodes.as_ref().clone())) as *mut c_void;
            CUDA_SUCCESS
        }
        None => refuse(CUDA_ERROR_INVALID_HANDLE, "cuGraphInstantiate of an unknown graph"),
    }
}

#[no_mangle]
pub extern "C" fn cuGraphLaunch(exec: *mut c_void, h: *mut c_void) -> CUresult {
    check_sticky!();
    let Some(nodes) = GRAPHS.get(exec as usize) else {
        return refuse(CUDA_ERROR_INVALID_HANDLE, "cuGraphLaunch of an unknown graph");
    };
    for node in nodes.iter() {
        let code = submit(h, node.clone());
        if code != CUDA_SUCCESS {
            return code;
        }
    }
    CUDA_SUCCESS
}

#[no_mangle]
pub extern "C" fn cuGraphUpload(exec: *mut c_void, _h: *mut c_void) -> CUresult {
    if GRAPHS.get(exec as usize).is_some() {
        CUDA_SUCCESS
    } else {
        CUDA_ERROR_INVALID_HANDLE
    }
}

#[no_mangle]
pub extern "C" fn cuGraphExecDestroy(exec: *mut c_void) -> CUresult {
    GRAPHS.remove(exec as usize).map_or(CUDA_ERROR_INVALID_HANDLE, |_| CUDA_SUCCESS)
}

#[no_mangle]
pub extern "C" fn cuGraphDestroy(graph: *mut c_void) -> CUresult {
    GRAPHS.remove(graph as usize).map_or(CUDA_ERROR_INVALID_HANDLE, |_| CUDA_SUCCESS)
}

// ---- Modules and launches ----

#[no_mangle]
pub unsafe extern "C" fn cuModuleLoadData(module: *mut *mut c_void, image: *const c_void) -> CUresult {
    let ptx = match CStr::from_ptr(image as *const c_char).to_str() {
        Ok(p) => p,
        Err(_) => return refuse(CUDA_ERROR_INVALID_IMAGE, "a module image that is not PTX text"),
    };
    match crate::launch::parse_module(ptx) {
        Ok(m) => {
            *module = MODULES.insert(Arc::new(m)) as *mut c_void;
            CUDA_SUCCESS
        }
        Err(why) => refuse(CUDA_ERROR_INVALID_IMAGE, why),
    }
}

#[no_mangle]
pub extern "C" fn cuModuleUnload(module: *mut c_void) -> CUresult {
    MODULES.remove(module as usize).map_or(CUDA_ERROR_INVALID_HANDLE, |_| CUDA_SUCCESS)
}

#[no_mangle]
pub unsafe extern "C" fn cuModuleGetFunction(
    function: *mut *mut c_void,
    module: *mut c_void,
    name: *const c_char,
) -> CUresult {
    let Some(m) = MODULES.get(module as usize) else {
        return refuse(CUDA_ERROR_INVALID_HANDLE, "cuModuleGetFunction of an unknown module");
    };
    let name = CStr::from_ptr(name).to_string_lossy();
    match m.functions.get(name.as_ref()) {
        Some(f) => {
            *function = FUNCTIONS.insert(Arc::clone(f)) as *mut c_void;
            CUDA_SUCCESS
        }
        None => refuse(CUDA_ERROR_NOT_FOUND, format!("no kernel {name} in the module")),
    }
}

#[no_mangle]
pub unsafe extern "C" fn cuFuncGetAttribute(
    value: *mut c_int,
    attribute: c_uint,
    function: *mut c_void,
) -> CUresult {
    let Some(f) = FUNCTIONS.get(function as usize) else {
        return CUDA_ERROR_INVALID_HANDLE;
    };
    *value = match attribute {
        0 => f.max_threads.unwrap_or(1024).min(1024) as c_int, // MAX_THREADS_PER_BLOCK
        other => {
            return refuse(CUDA_ERROR_INVALID_VALUE, format!("function attribute {other} is not emulated"))
        }
    };
    CUDA_SUCCESS
}

#[no_mangle]
pub extern "C" fn cuFuncSetAttribute(function: *mut c_void, _attribute: c_uint, _value: c_int) -> CUresult {
    FUNCTIONS.get(function as usize).map_or(CUDA_ERROR_INVALID_HANDLE, |_| CUDA_SUCCESS)
}

#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cuLaunchKernel(
    function: *mut c_void,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    shared: c_uint,
    h: *mut c_void,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CUresult {
    check_sticky!();
    let Some(f) = FUNCTIONS.get(function as usize) else {
        return refuse(CUDA_ERROR_INVALID_HANDLE, "cuLaunchKernel of an unknown function");
    };
    if !extra.is_null() {
        return refuse(CUDA_ERROR_NOT_SUPPORTED, "cuLaunchKernel's `extra` parameters are not emulated");
    }
    match Launch::new(f, [gx, gy, gz], [bx, by, bz], shared, params) {
        Ok(launch) => submit(h, Op::Launch(Arc::new(launch))),
        Err((code, why)) => refuse(code, why),
    }
}

/// Queues a cuBLAS product on its handle's stream (crate::blas).
pub(crate) fn submit_blas(stream: usize, op: Op) -> CUresult {
    check_sticky!();
    submit(stream as *mut c_void, op)
}
