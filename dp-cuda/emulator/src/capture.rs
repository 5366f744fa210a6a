//! Stream capture into graphs. The work captured on every stream of a capture is kept with the
//! nodes it depends on, as the driver keeps a graph's edges: the node captured before it on its
//! stream, and the nodes an event recorded before a wait stood for. A graph replays its nodes one at
//! a time in an order those edges allow: the capture order by default; under a late schedule
//! (`DP_EMULATOR_LATE_STREAMS`) the order that runs the nodes of the streams the schedule delays as
//! late as the edges allow, so that a dependency missing inside a graph shows as it does between
//! eager streams (replaying in capture order would hide it: that order satisfies every dependency the
//! host meant, written down or not).
//! What the driver refuses is refused here too: a capture whose forked streams are not joined back
//! into its origin before it ends (each stream's captured work must be known to the origin through
//! events: a vector clock per stream), a captured stream waiting on an event recorded outside the
//! capture, and, from the capturing thread, calls that would synchronise with it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

use crate::state::{self, Late};
use crate::stream::{Op, Stream};

/// What a stream's captured work is known to have reached: its own count of captured operations,
/// the counts of the other streams' it has waited for, and the nodes its next node depends on.
#[derive(Clone, Default, Debug)]
pub struct Clock {
    count: usize,
    knows: HashMap<usize, usize>,
    frontier: Vec<usize>,
}

impl Clock {
    fn merge(&mut self, stream: usize, other: &Clock) {
        let known = self.knows.entry(stream).or_default();
        *known = (*known).max(other.count);
        for (&s, &c) in &other.knows {
            let known = self.knows.entry(s).or_default();
            *known = (*known).max(c);
        }
        for &node in &other.frontier {
            if !self.frontier.contains(&node) {
                self.frontier.push(node);
            }
        }
    }
}

/// A captured operation, the stream it was captured on, and the nodes it depends on (all earlier).
struct Node {
    op: Op,
    stream: usize,
    after: Vec<usize>,
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
    nodes: Vec<Node>,
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
        let clock = self.clocks.entry(stream).or_default();
        clock.count += 1;
        let after = std::mem::replace(&mut clock.frontier, vec![self.nodes.len()]);
        self.nodes.push(Node { op, stream, after });
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

    /// Ends the capture begun on `origin`: every stream leaves it, and the captured work is returned
    /// in the order a replay runs it (`replay_order`), or why there is no graph.
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
        let nodes = std::mem::take(&mut capture.nodes);
        let edges: Vec<(usize, &[usize])> = nodes.iter().map(|n| (n.stream, n.after.as_slice())).collect();
        let order = replay_order(&edges, state::late_streams());
        let mut ops: Vec<Option<Op>> = nodes.into_iter().map(|n| Some(n.op)).collect();
        Ok(order.into_iter().map(|i| ops[i].take().expect("each node once")).collect())
    }
}

/// An order of a graph's nodes (each its stream and the earlier nodes it depends on) that runs every
/// node after those it depends on: of the nodes ready, the one whose stream the schedule runs first
/// (`Later`: the stream made first; `Earlier`: the stream made last; `None`: any), the earliest
/// captured of them. `None` gives the capture order.
fn replay_order(nodes: &[(usize, &[usize])], late: Late) -> Vec<usize> {
    let priority = |node: usize| -> (i128, usize) {
        let stream = nodes[node].0 as i128;
        let rank = match late {
            Late::None => 0,
            Late::Later => stream,
            Late::Earlier => -stream,
        };
        (rank, node)
    };
    let mut waiting_on: Vec<usize> = nodes.iter().map(|(_, after)| after.len()).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (node, (_, after)) in nodes.iter().enumerate() {
        for &before in *after {
            dependents[before].push(node);
        }
    }
    let mut ready: BinaryHeap<Reverse<(i128, usize)>> =
        (0..nodes.len()).filter(|&n| waiting_on[n] == 0).map(|n| Reverse(priority(n))).collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(Reverse((_, node))) = ready.pop() {
        order.push(node);
        for &next in &dependents[node] {
            waiting_on[next] -= 1;
            if waiting_on[next] == 0 {
                ready.push(Reverse(priority(next)));
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    // Stream 1 forks stream 2 after node 0; each captures two nodes; stream 1 joins stream 2 before
    // its last node (4).
    const FORK_AND_JOIN: [(usize, &[usize]); 5] = [(1, &[]), (2, &[0]), (1, &[0]), (2, &[1]), (1, &[2, 3])];

    #[test]
    fn the_default_replays_in_capture_order() {
        assert_eq!(replay_order(&FORK_AND_JOIN, Late::None), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_late_schedule_runs_the_delayed_streams_nodes_as_late_as_their_edges_allow() {
        // Later: stream 2 (made after stream 1) only when stream 1 can go no further.
        assert_eq!(replay_order(&FORK_AND_JOIN, Late::Later), [0, 2, 1, 3, 4]);
        // Earlier: stream 1 waits for stream 2's nodes wherever it may.
        assert_eq!(replay_order(&FORK_AND_JOIN, Late::Earlier), [0, 1, 3, 2, 4]);
    }

    #[test]
    fn every_order_keeps_every_edge() {
        // A diamond across three streams, and a node of stream 3 that nothing joins but the end.
        let nodes: [(usize, &[usize]); 7] =
            [(1, &[]), (3, &[0]), (2, &[0]), (3, &[1]), (2, &[2, 1]), (1, &[0]), (1, &[5, 4, 3])];
        for late in [Late::None, Late::Later, Late::Earlier] {
            let order = replay_order(&nodes, late);
            assert_eq!(order.len(), nodes.len());
            let position = |n: usize| order.iter().position(|&m| m == n).unwrap();
            for (node, (_, after)) in nodes.iter().enumerate() {
                for &before in *after {
                    assert!(
                        position(before) < position(node),
                        "{late:?}: {before} before {node} in {order:?}"
                    );
                }
            }
        }
    }
}
