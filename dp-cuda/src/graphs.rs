//! CUDA graphs of a step's launches before its update (a private step's, or a non-private one's, which
//! is measured against it). A step of a small model is some thirty
//! short launches (products, epilogues, norms, clip factors, clipped sums, the noise's two passes), and
//! on a GPU each launch costs microseconds of host and driver time whatever its size: captured once and
//! replayed as one graph, they cost one. A graph's launches carry their shapes and addresses, so one is
//! captured per batch size and clipping setting (a Poisson batch's size varies from step to step:
//! a run captures a few dozen), and every graph is dropped when the regions are allocated again. What
//! changes every step stays out of the graphs: the batch and the key are copied in before a replay
//! (into the same addresses), and the update, whose learning rate follows the schedule, is launched
//! after it. A distributed rank's graph stops at the clipped sum, which is copied out for the reduce.
//! A step with views (augmentation multiplicity) replays one graph per example: the program at K
//! views and the example's clipped average, the same launches for every example once its views are
//! copied into the program's regions.
//!
//! A capture that fails (a library call that cannot be captured, a driver without graphs) turns graphs
//! off for the model: its steps launch one by one from then on, with the same results, and
//! [`StepGraphs::off`] says why.

use std::collections::HashMap;

use cudarc::driver::CudaGraph;
use dp_runtime::clipping::ClipMode;

use crate::trainer::Clipping;

/// What a step queues before its update, and so what its graph holds.
#[derive(Debug, Clone, Copy)]
pub enum BeforeUpdate {
    /// A non-private step's: the forward, the backward and the plain gradient sum.
    GradientSum,
    /// A private step's: the norms, clip factors and clipped sum, and the noise under the loaded key.
    PrivateStep(Clipping),
    /// A distributed rank's (`docs/DISTRIBUTED.md`): a private step's without the noise, which rank 0
    /// draws on the host.
    ClippedSum(Clipping),
    /// One example of a step with views (`trainer/views.rs`), its views copied into the program's
    /// regions before: the program's forward, backward and gradient sum at K views, their average's
    /// group norms, its clip factors (counted) and the clipped average added into the views' sum. The
    /// same for every example; the batch size of its key is K.
    ExampleOfViews(Clipping),
}

/// What a captured graph depends on besides the model: the batch size, the clipping (none: a
/// non-private step, whose graph is the plain gradient sum's), whether it draws the noise, and
/// whether it is one example of a step with views.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GraphKey {
    n: usize,
    /// Per-layer clipping and the bits of C.
    clipping: Option<(bool, u64)>,
    noise: bool,
    example_of_views: bool,
}

impl GraphKey {
    pub fn new(n: usize, before: BeforeUpdate) -> Self {
        let (clipping, noise, example_of_views) = match before {
            BeforeUpdate::GradientSum => (None, false, false),
            BeforeUpdate::PrivateStep(clipping) => (Some(clipping), true, false),
            BeforeUpdate::ClippedSum(clipping) => (Some(clipping), false, false),
            BeforeUpdate::ExampleOfViews(clipping) => (Some(clipping), false, true),
        };
        let clipping = clipping.map(|c| (matches!(c.mode, ClipMode::PerLayer), c.norm.to_bits()));
        GraphKey { n, clipping, noise, example_of_views }
    }
}

/// More batch sizes than a Poisson run visits: past it the cache starts again (a graph is a few
/// kilobytes of driver memory).
const MAX_GRAPHS: usize = 512;

/// A captured graph that may move to another thread with its model: CUDA asks only that no two calls
/// on one graph run at once, and a graph is reached only through its one owner's `&mut`.
struct Graph(CudaGraph);

// SAFETY: see `Graph`: moved, never shared; the context is bound to the calling thread at each launch.
unsafe impl Send for Graph {}

/// The captured graphs of one model on one GPU.
#[derive(Default)]
pub struct StepGraphs {
    graphs: HashMap<GraphKey, Graph>,
    /// Why graphs were turned off, once a capture failed.
    off: Option<String>,
    /// Steps (or examples of a step with views) launched eagerly so far: the first runs eagerly, so
    /// that libraries initialise outside a capture.
    eager_steps: u64,
    /// Steps replayed from a graph.
    replayed: u64,
}

impl std::fmt::Debug for StepGraphs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepGraphs")
            .field("graphs", &self.graphs.len())
            .field("off", &self.off)
            .field("replayed", &self.replayed)
            .finish()
    }
}

impl StepGraphs {
    /// Whether the next step under `key` may be captured or replayed.
    pub fn usable(&self) -> bool {
        self.off.is_none() && self.eager_steps > 0
    }

    pub fn get(&self, key: &GraphKey) -> Option<&CudaGraph> {
        self.graphs.get(key).map(|g| &g.0)
    }

    pub fn insert(&mut self, key: GraphKey, graph: CudaGraph) -> &CudaGraph {
        if self.graphs.len() >= MAX_GRAPHS {
            self.graphs.clear();
        }
        &self.graphs.entry(key).or_insert(Graph(graph)).0
    }

    /// A capture failed: no graphs from now on.
    pub fn turn_off(&mut self, why: String) {
        self.graphs.clear();
        self.off = Some(why);
    }

    /// The regions moved: every graph's addresses are stale.
    pub fn invalidate(&mut self) {
        self.graphs.clear();
    }

    /// The products changed kind (a new precision): every graph is stale, and the next step runs
    /// eagerly again, so that the library's first calls of the new kind (its set-up for bf16 tensor
    /// core products) happen outside a capture.
    pub fn restart(&mut self) {
        self.graphs.clear();
        self.eager_steps = 0;
    }

    pub fn count_eager(&mut self) {
        self.eager_steps += 1;
    }

    pub fn count_replay(&mut self) {
        self.replayed += 1;
    }

    /// Steps replayed from a graph so far.
    pub fn replayed(&self) -> u64 {
        self.replayed
    }

    /// Why graphs are off, if a capture failed.
    pub fn off(&self) -> Option<&str> {
        self.off.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graphs_wait_for_one_eager_step_and_stay_off_after_a_failed_capture() {
        let mut graphs = StepGraphs::default();
        assert!(!graphs.usable(), "the first step runs eagerly, outside any capture");
        graphs.count_eager();
        assert!(graphs.usable());
        graphs.turn_off("capturing a step: not permitted".into());
        assert!(!graphs.usable());
        assert_eq!(graphs.off(), Some("capturing a step: not permitted"));
        graphs.count_eager();
        assert!(!graphs.usable(), "a failed capture is not retried");
    }

    #[test]
    fn a_restart_waits_for_one_eager_step_again() {
        let mut graphs = StepGraphs::default();
        graphs.count_eager();
        assert!(graphs.usable());
        graphs.restart();
        assert!(!graphs.usable(), "after a precision change the next step runs eagerly");
        graphs.count_eager();
        assert!(graphs.usable());
    }

    #[test]
    fn a_graph_key_separates_batch_sizes_clipping_the_noise_the_non_private_step_and_views() {
        let flat = Clipping { mode: ClipMode::Flat, norm: 1.0 };
        let per_layer = Clipping { mode: ClipMode::PerLayer, norm: 1.0 };
        let looser = Clipping { mode: ClipMode::Flat, norm: 2.0 };
        let keys = [
            GraphKey::new(128, BeforeUpdate::PrivateStep(flat)),
            GraphKey::new(129, BeforeUpdate::PrivateStep(flat)),
            GraphKey::new(128, BeforeUpdate::PrivateStep(per_layer)),
            GraphKey::new(128, BeforeUpdate::PrivateStep(looser)),
            GraphKey::new(128, BeforeUpdate::GradientSum),
            GraphKey::new(128, BeforeUpdate::ClippedSum(flat)),
            GraphKey::new(128, BeforeUpdate::ExampleOfViews(flat)),
            GraphKey::new(128, BeforeUpdate::ExampleOfViews(per_layer)),
            GraphKey::new(3, BeforeUpdate::ExampleOfViews(flat)),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(GraphKey::new(128, BeforeUpdate::PrivateStep(flat)), keys[0]);
    }
}
