//! Streams and events. Each stream is a thread that runs its queue in order, so work on two streams
//! runs concurrently and is ordered only by the events between them, as on a GPU: a wait left out
//! can show as a wrong value. Asynchronous copies from and to pinned memory read and write it when
//! they run, not when they are queued. With `DP_EMULATOR_LATE_STREAMS=later` a stream
//! runs each operation only when every stream made before it has nothing to run (its queue has run,
//! or it waits on an event): a landing or branch stream's work then comes as late as the events
//! allow, so that work on the main stream which reads its results without waiting for them reads
//! stale values; `earlier` delays the main stream against the others instead, so that a landing or
//! branch stream that overwrites what the main stream has yet to read shows.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Instant;

use crate::capture::{Capture, CapturedRecord};
use crate::launch::Launch;
use crate::state;

/// Work queued on a stream (or captured into a graph).
#[derive(Clone)]
pub enum Op {
    /// `bytes` bytes from `src` to `dst` (device or pinned host memory, read and written when run).
    Copy { dst: usize, src: usize, bytes: usize },
    /// Host bytes copied when queued (from pageable memory, as the driver stages them), written to
    /// the device when run.
    Staged { dst: usize, bytes: Arc<Vec<u8>> },
    /// `bytes` bytes at `dst` set to `value`.
    Fill { dst: usize, value: u8, bytes: usize },
    /// A kernel.
    Launch(Arc<Launch>),
    /// A library call (cuBLAS).
    Work(Arc<dyn Fn() -> Result<(), String> + Send + Sync>),
    /// Marks `event`'s record number `record` complete.
    Record { event: Arc<Event>, record: u64 },
    /// Waits until `event`'s record number `record` is complete.
    Wait { event: Arc<Event>, record: u64 },
    /// Frees a device allocation (`cuMemFreeAsync`): in stream order.
    Free { start: usize },
}

impl Op {
    fn run(&self) -> Result<(), String> {
        match self {
            Op::Copy { dst, src, bytes } => {
                // SAFETY: both ranges were checked against live allocations when queued; a range
                // freed since then is unmapped, and the copy stops the process, as it should.
                unsafe { std::ptr::copy(*src as *const u8, *dst as *mut u8, *bytes) };
                Ok(())
            }
            Op::Staged { dst, bytes } => {
                // SAFETY: as for Copy.
                unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), *dst as *mut u8, bytes.len()) };
                Ok(())
            }
            Op::Fill { dst, value, bytes } => {
                // SAFETY: as for Copy.
                unsafe { std::ptr::write_bytes(*dst as *mut u8, *value, *bytes) };
                Ok(())
            }
            Op::Launch(launch) => launch.run(),
            Op::Work(work) => work(),
            Op::Record { event, record } => {
                event.complete(*record);
                Ok(())
            }
            Op::Wait { event, record } => {
                event.wait_for(*record);
                Ok(())
            }
            Op::Free { start } => state::memory()
                .free(*start, crate::memory::Kind::Device)
                .map_err(|e| format!("cuMemFreeAsync: {e}")),
        }
    }
}

/// An event: records are numbered; a wait or a synchronisation waits for the number recorded last
/// when it was queued or called.
pub struct Event {
    /// Whether elapsed times may be asked of it (not `CU_EVENT_DISABLE_TIMING`).
    pub timing: bool,
    state: Mutex<EventState>,
    changed: Condvar,
}

struct EventState {
    recorded: u64,
    completed: u64,
    at: Option<Instant>,
    captured: Option<CapturedRecord>,
}

impl Event {
    /// A new event, never recorded.
    pub fn new(timing: bool) -> Self {
        Event {
            timing,
            state: Mutex::new(EventState { recorded: 0, completed: 0, at: None, captured: None }),
            changed: Condvar::new(),
        }
    }

    /// A new record outside any capture: its number, which the Record op queued with it completes.
    pub fn next_record(&self) -> u64 {
        let mut s = self.state.lock().unwrap();
        s.recorded += 1;
        s.captured = None;
        s.recorded
    }

    /// The number of the last record outside a capture, or the record inside one.
    pub fn last(&self) -> Result<u64, CapturedRecord> {
        let s = self.state.lock().unwrap();
        match &s.captured {
            Some(c) => Err(c.clone()),
            None => Ok(s.recorded),
        }
    }

    /// Marks the event as last recorded inside a capture.
    pub fn record_captured(&self, record: CapturedRecord) {
        self.state.lock().unwrap().captured = Some(record);
    }

    fn complete(&self, record: u64) {
        let mut s = self.state.lock().unwrap();
        if record > s.completed {
            s.completed = record;
            s.at = Some(Instant::now());
        }
        self.changed.notify_all();
    }

    /// Blocks until record `record` is complete (record 0: never recorded, nothing to wait for).
    pub fn wait_for(&self, record: u64) {
        let mut s = self.state.lock().unwrap();
        while s.completed < record && !state::failed() {
            s = self.changed.wait_timeout(s, std::time::Duration::from_millis(50)).unwrap().0;
        }
    }

    /// Whether record `record` is complete.
    pub fn is_complete(&self, record: u64) -> bool {
        self.state.lock().unwrap().completed >= record
    }

    /// When the last completed record ran, if it has.
    pub fn completed_at(&self) -> Option<(u64, u64, Instant)> {
        let s = self.state.lock().unwrap();
        s.at.map(|at| (s.recorded, s.completed, at))
    }
}

/// Every stream made, for the late schedules (`DP_EMULATOR_LATE_STREAMS`).
static LIVE: Mutex<Vec<Weak<Stream>>> = Mutex::new(Vec::new());

/// A stream: a queue and the thread that runs it.
pub struct Stream {
    /// Its handle.
    pub id: usize,
    /// Whether its thread is waiting on an event.
    waiting: AtomicBool,
    queue: Mutex<Queue>,
    changed: Condvar,
}

struct Queue {
    ops: VecDeque<Op>,
    issued: u64,
    done: u64,
    closed: bool,
    capture: Option<Arc<Mutex<Capture>>>,
}

impl Stream {
    /// A new stream and its thread.
    pub fn start(id: usize) -> Arc<Self> {
        let stream = Arc::new(Stream {
            id,
            waiting: AtomicBool::new(false),
            queue: Mutex::new(Queue {
                ops: VecDeque::new(),
                issued: 0,
                done: 0,
                closed: false,
                capture: None,
            }),
            changed: Condvar::new(),
        });
        let mut live = LIVE.lock().unwrap();
        live.retain(|s| s.strong_count() > 0);
        live.push(Arc::downgrade(&stream));
        drop(live);
        let worker = Arc::clone(&stream);
        std::thread::Builder::new()
            .name(format!("emulated stream {id}"))
            .spawn(move || worker.run())
            .expect("a stream's thread");
        stream
    }

    fn run(&self) {
        loop {
            let op = {
                let mut q = self.queue.lock().unwrap();
                loop {
                    if let Some(op) = q.ops.pop_front() {
                        break op;
                    }
                    if q.closed {
                        return;
                    }
                    q = self.changed.wait(q).unwrap();
                }
            };
            if !state::failed() {
                let late = state::late_streams();
                if late != state::Late::None {
                    while !self.others_idle(late) && !state::failed() {
                        std::thread::sleep(std::time::Duration::from_micros(20));
                    }
                }
                let waits = matches!(op, Op::Wait { .. });
                self.waiting.store(waits, Ordering::SeqCst);
                let ran = op.run();
                self.waiting.store(false, Ordering::SeqCst);
                if let Err(e) = ran {
                    state::fail(format!("on stream {}: {e}", self.id));
                }
            }
            let mut q = self.queue.lock().unwrap();
            q.done += 1;
            self.changed.notify_all();
        }
    }

    /// Whether every stream made before this one (`Late::Later`), or after it (`Late::Earlier`), has
    /// nothing to run: its queue has run, or it waits on an event.
    fn others_idle(&self, late: state::Late) -> bool {
        LIVE.lock()
            .unwrap()
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|s| match late {
                state::Late::Later => s.id < self.id,
                state::Late::Earlier => s.id > self.id,
                state::Late::None => false,
            })
            .all(|s| s.waiting.load(Ordering::SeqCst) || s.is_idle())
    }

    /// Queues `op`, or adds it to the graph this stream is capturing into.
    pub fn enqueue(&self, op: Op) {
        let mut q = self.queue.lock().unwrap();
        if let Some(capture) = &q.capture {
            capture.lock().unwrap().add(self.id, op);
            return;
        }
        q.ops.push_back(op);
        q.issued += 1;
        self.changed.notify_all();
    }

    /// The capture this stream is part of, if any.
    pub fn capture(&self) -> Option<Arc<Mutex<Capture>>> {
        self.queue.lock().unwrap().capture.clone()
    }

    /// Makes the stream part of `capture` (or of none).
    pub fn set_capture(&self, capture: Option<Arc<Mutex<Capture>>>) {
        self.queue.lock().unwrap().capture = capture;
    }

    /// Blocks until everything queued so far has run.
    pub fn synchronize(&self) {
        let mut q = self.queue.lock().unwrap();
        let target = q.issued;
        while q.done < target {
            q = self.changed.wait(q).unwrap();
        }
    }

    /// Whether everything queued has run.
    pub fn is_idle(&self) -> bool {
        let q = self.queue.lock().unwrap();
        q.done == q.issued
    }

    /// Ends the thread once the queue has run.
    pub fn close(&self) {
        let mut q = self.queue.lock().unwrap();
        q.closed = true;
        self.changed.notify_all();
    }
}
