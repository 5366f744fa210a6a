//! A second stream forked from the GPU's stream and joined back to it: work queued on it runs beside
//! the work queued on the main stream between the fork and the join, and everything queued on the
//! main stream after the join waits for both.
//!
//! A private step draws its noise on one (docs/GPU.md, "The noise beside the program"): the draw
//! reads only the step's key and the noise tables and writes only its own buffers, which nothing
//! reads before the update, so it need not wait for the forward, backward, norms and clipped sum,
//! nor they for it. A small model's kernels leave most of the GPU idle, so the two run at once. The
//! fork and join are an event recorded on one stream and waited on by the other; inside a capture
//! they become the edges of the graph, whose draw is then a branch of its own, replayed the same way.

use std::sync::Arc;

use cudarc::driver::{CudaEvent, CudaStream};

use crate::device::{driver, Gpu};
use crate::error::Result;

/// A stream of its own with the two events that fork it from, and join it back to, the main stream.
pub struct Branch {
    stream: Arc<CudaStream>,
    /// Recorded on the main stream at the fork; the branch waits for it.
    forked: CudaEvent,
    /// Recorded on the branch at the join; the main stream waits for it.
    joined: CudaEvent,
}

impl std::fmt::Debug for Branch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Branch").finish_non_exhaustive()
    }
}

impl Branch {
    /// A branch of `gpu`'s stream.
    pub fn new(gpu: &Gpu) -> Result<Self> {
        let context = gpu.stream.context();
        let stream = context.new_stream().map_err(driver("creating a branch's stream"))?;
        let forked = context.new_event(None).map_err(driver("creating a branch's event"))?;
        let joined = context.new_event(None).map_err(driver("creating a branch's event"))?;
        Ok(Branch { stream, forked, joined })
    }

    /// The branch's stream, after it has been made to wait for everything queued on `gpu`'s stream so
    /// far: what is queued on it next runs after that and beside what `gpu`'s stream runs next.
    pub fn fork(&self, gpu: &Gpu) -> Result<&Arc<CudaStream>> {
        self.forked.record(&gpu.stream).map_err(driver("forking a branch"))?;
        self.stream.wait(&self.forked).map_err(driver("forking a branch"))?;
        Ok(&self.stream)
    }

    /// Makes `gpu`'s stream wait, from here on, for everything queued on the branch. The caller
    /// joins every fork, also when a launch after it failed: a capture with a branch not joined
    /// cannot end, and an eager branch not joined runs unordered with what follows it.
    pub fn join(&self, gpu: &Gpu) -> Result<()> {
        self.joined.record(&self.stream).map_err(driver("joining a branch"))?;
        gpu.stream.wait(&self.joined).map_err(driver("joining a branch"))
    }
}
