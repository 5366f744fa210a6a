//! [`MpiGroup`]: the ranks of `MPI_COMM_WORLD` (Open MPI through the `mpi` crate), behind the `mpi`
//! feature.

use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives, Root};

use super::group::Group;
use crate::error::{Error, Result};

/// The world of an `mpirun` job. MPI is initialised when it is made and finalised when it is dropped
/// (after the last collective).
pub struct MpiGroup {
    world: SimpleCommunicator,
    // Dropped last: finalises MPI.
    _universe: Universe,
}

impl MpiGroup {
    /// Initialises MPI (once per process) and joins `MPI_COMM_WORLD`.
    pub fn initialize() -> Result<Self> {
        let universe = mpi::initialize()
            .ok_or_else(|| Error::invalid("mpi", "MPI was already initialised in this process"))?;
        let world = universe.world();
        Ok(MpiGroup { world, _universe: universe })
    }

    /// Leaves the world: finalises MPI (as dropping the group does; the communicator goes first).
    pub fn finalize(self) {
        drop(self);
    }

    /// Stops every rank of the job (`MPI_Abort`) with exit status `code`: what a rank does when it
    /// fails outside the collectives that carry a failure to the others (see `docs/DISTRIBUTED.md`).
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}

impl Group for MpiGroup {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn sum_to_root(&mut self, local: &[f32], total: &mut [f32]) {
        let root = self.world.process_at_rank(0);
        if self.world.rank() == 0 {
            root.reduce_into_root(local, total, SystemOperation::sum());
        } else {
            root.reduce_into(local, SystemOperation::sum());
        }
    }

    fn broadcast_from_root(&mut self, values: &mut [f64]) {
        self.world.process_at_rank(0).broadcast_into(values);
    }

    fn broadcast_bytes(&mut self, root: usize, bytes: &mut [u8]) {
        self.world.process_at_rank(root as i32).broadcast_into(bytes);
    }

    fn lowest_failed(&mut self, failed: bool) -> Option<usize> {
        let size = self.world.size();
        let mine: i32 = if failed { self.world.rank() } else { size };
        let mut lowest = size;
        self.world.all_reduce_into(&mine, &mut lowest, SystemOperation::min());
        (lowest < size).then_some(lowest as usize)
    }
}
