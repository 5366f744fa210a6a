//! Stream capture into graphs. The work captured on every stream of a capture is kept in the order
//! it was issued (every dependency points back, so that order respects them all) and replayed so.
//! What the driver refuses is refused here too: a capture whose forked streams are not joined back
//! into its origin before it ends (each stream's captured work must be known to the origin through
//! events: a vector clock per stream), a captured stream waiting on an event recorded outside the
//! capture, and, from the capturing thread, calls that would synchronise with it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

use crate::stream::{Op, Stream};

/// What a stream's captured work is known to have reached: its own count of captured operations,
/// and the counts of the other streams' it has waited for.
#[derive(Clone, Default, Debug)]
pub struct Clock {
    count: usize,
    knows: HashMap<usize, usize>,
}

impl Clock {
    fn merge(&mut self, stream: usize, other: &Clock) {
        let known = self.knows.entry(stream).or_default();
        *known = (*known).max(other.count);
        for (&s, &c) in &other.knows {
            let known = self.knows.entry(s).or_default();
            *known = (*known).max(c);
        }
    }
}

/// An event's record inside a capture: the capture, the stream and its clock then.
#[derive(Clone)]
pub struct CapturedRecord {
    /// The capture it belongs to.
    pub capture: Arc<Mutex<Capture>>,
    /// The stream it was recorded on.
    pub stream: usize,
    clock: Clock,
}

/// A capture in progress.
pub struct Capture {
    /// The stream that began it.
    pub origin: usize,
    /// The thread that began it (capture mode "thread local": its synchronising calls are refused).
    pub thread: ThreadId,
    nodes: Vec<Op>,
    clocks: HashMap<usize, Clock>,
    streams: Vec<Arc<Stream>>,
    /// Why the capture can no longer end in a graph, if something invalidated it.
    pub invalid: Option<String>,
    /// Whether it has ended: an event recorded in it can no longer join a stream to it.
    ended: bool,
}

impl Capture {
    /// A capture begun on `origin` by the calling thread.
    pub fn begin(origin: &Arc<Stream>) -> Arc<Mutex<Capture>> {
        let capture = Arc::new(Mutex::new(Capture {
            origin: origin.id,
            thread: std::thread::current().id(),
            nodes: Vec::new(),
            clocks: HashMap::from([(origin.id, Clock::default())]),
            streams: vec![Arc::clone(origin)],
            invalid: None,
            ended: false,
        }));
        origin.set_capture(Some(Arc::clone(&capture)));
        capture
    }

    /// Adds work issued on `stream`.
    pub fn add(&mut self, stream: usize, op: Op) {
        self.clocks.entry(stream).or_default().count += 1;
        self.nodes.push(op);
    }

    /// A record of an event on `stream`, now.
    pub fn record(this: &Arc<Mutex<Capture>>, stream: usize) -> CapturedRecord {
        let clock = this.lock().unwrap().clocks.get(&stream).cloned().unwrap_or_default();
        CapturedRecord { capture: Arc::clone(this), stream, clock }
    }

    /// `stream` waits on `record`: joins the capture if it is not part of it yet. Refused when the
    /// capture has ended (the event's record is a node of a graph, not work a stream can wait for).
    pub fn wait(
        this: &Arc<Mutex<Capture>>,
        stream: &Arc<Stream>,
        record: &CapturedRecord,
    ) -> Result<(), String> {
        let joins = {
            let mut capture = this.lock().unwrap();
            if capture.ended {
                return Err("a wait on an event last recorded in a capture that has ended".into());
            }
            let joins = !capture.clocks.contains_key(&stream.id);
            if joins {
                capture.streams.push(Arc::clone(stream));
            }
            capture.clocks.entry(stream.id).or_default().merge(record.stream, &record.clock);
            joins
        };
        // The stream's queue is locked after the capture is released: enqueueing locks them in the
        // other order.
        if joins {
            stream.set_capture(Some(Arc::clone(this)));
        }
        Ok(())
    }

    /// Marks the capture invalid (the first reason is kept).
    pub fn invalidate(&mut self, why: String) {
        self.invalid.get_or_insert(why);
    }

    /// Ends the capture begun on `origin`: every stream leaves it, and the captured work is returned,
    /// or why there is no graph.
    pub fn end(this: &Arc<Mutex<Capture>>) -> Result<Vec<Op>, (u32, String)> {
        let streams = {
            let mut capture = this.lock().unwrap();
            capture.ended = true;
            std::mem::take(&mut capture.streams)
        };
        for stream in &streams {
            stream.set_capture(None);
        }
        let mut capture = this.lock().unwrap();
        if let Some(why) = capture.invalid.take() {
            return Err((crate::api::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, why));
        }
        let origin = capture.clocks[&capture.origin].clone();
        for (&stream, clock) in &capture.clocks {
            let known = if stream == capture.origin {
                clock.count
            } else {
                origin.knows.get(&stream).copied().unwrap_or(0)
            };
            if known < clock.count {
                return Err((
                    crate::api::CUDA_ERROR_STREAM_CAPTURE_UNJOINED,
                    format!(
                        "stream {stream} forked into the capture of stream {} has {} captured operations the \
                         origin does not wait for",
                        capture.origin,
                        clock.count - known
                    ),
                ));
            }
        }
        Ok(std::mem::take(&mut capture.nodes))
    }
}
