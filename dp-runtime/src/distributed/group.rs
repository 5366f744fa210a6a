//! The communication a data-parallel run needs, as a small trait: one process is the K = 1 case.
//!
//! Every method is collective: every rank of the group calls it, in the same order, with buffers of
//! the same length. An implementation that cannot complete one (a dead peer) must not return; MPI's
//! stops the job (`MPI_Abort`), so a rank never waits forever on an error it cannot see.

/// A group of K ranks that train one model together (see `docs/DISTRIBUTED.md`).
pub trait Group {
    /// This process's rank, in `0..size()`; rank 0 is the aggregator that draws the noise.
    fn rank(&self) -> usize;

    /// K, the number of ranks.
    fn size(&self) -> usize;

    /// Sums every rank's `local` (f32, one reduce) into `total` on rank 0; `total` is left as it was
    /// on the other ranks, which never see the sum.
    fn sum_to_root(&mut self, local: &[f32], total: &mut [f32]);

    /// Copies rank 0's `values` into every rank's `values`.
    fn broadcast_from_root(&mut self, values: &mut [f64]);

    /// Copies rank `root`'s `bytes` into every rank's `bytes`.
    fn broadcast_bytes(&mut self, root: usize, bytes: &mut [u8]);

    /// The lowest rank that passed `failed = true`, on every rank; `None` when none did.
    fn lowest_failed(&mut self, failed: bool) -> Option<usize>;
}

/// A borrowed group: the caller keeps the group (e.g. to abort the job after `fit` returns an error).
impl<G: Group + ?Sized> Group for &mut G {
    fn rank(&self) -> usize {
        (**self).rank()
    }

    fn size(&self) -> usize {
        (**self).size()
    }

    fn sum_to_root(&mut self, local: &[f32], total: &mut [f32]) {
        (**self).sum_to_root(local, total)
    }

    fn broadcast_from_root(&mut self, values: &mut [f64]) {
        (**self).broadcast_from_root(values)
    }

    fn broadcast_bytes(&mut self, root: usize, bytes: &mut [u8]) {
        (**self).broadcast_bytes(root, bytes)
    }

    fn lowest_failed(&mut self, failed: bool) -> Option<usize> {
        (**self).lowest_failed(failed)
    }
}
