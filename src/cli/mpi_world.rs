//! `dp train` as one rank of `mpirun -n K`: joining the MPI world (feature `mpi`), or refusing to run
//! as one of K independent copies in a build without it.

use dp_runtime::distributed::{launcher_world_size, Group};
use dp_runtime::{Error, Result};

/// The world a rank of `mpirun` joins.
#[cfg(feature = "mpi")]
pub type World = dp_runtime::distributed::MpiGroup;

/// Without the `mpi` feature there is no world to join: the type has no values.
#[cfg(not(feature = "mpi"))]
pub enum World {}

#[cfg(not(feature = "mpi"))]
impl World {
    /// Unreachable: there is no `World` without the `mpi` feature.
    pub fn abort(&self, _code: i32) -> ! {
        match *self {}
    }

    /// Unreachable: there is no `World` without the `mpi` feature.
    pub fn finalize(self) {
        match self {}
    }
}

#[cfg(not(feature = "mpi"))]
impl Group for World {
    fn rank(&self) -> usize {
        match *self {}
    }
    fn size(&self) -> usize {
        match *self {}
    }
    fn sum_to_root(&mut self, _: &[f32], _: &mut [f32]) {
        match *self {}
    }
    fn broadcast_from_root(&mut self, _: &mut [f64]) {
        match *self {}
    }
    fn broadcast_bytes(&mut self, _: usize, _: &mut [u8]) {
        match *self {}
    }
    fn lowest_failed(&mut self, _: bool) -> Option<usize> {
        match *self {}
    }
}

/// The MPI world when this process was started by an MPI launcher, `None` otherwise. A build without
/// the `mpi` feature started as one of K > 1 ranks refuses: each copy would train alone on all the
/// data and write the same outputs.
pub fn join() -> Result<Option<World>> {
    let launched = launcher_world_size();
    #[cfg(feature = "mpi")]
    {
        match launched {
            Some(_) => dp_runtime::distributed::MpiGroup::initialize().map(Some),
            None => Ok(None),
        }
    }
    #[cfg(not(feature = "mpi"))]
    {
        match launched {
            Some(ranks) if ranks > 1 => Err(Error::invalid(
                "mpi",
                format!(
                    "dp was started as one of {ranks} MPI ranks but built without the `mpi` feature; \
                     build it with `cargo build --release --features mpi`"
                ),
            )),
            _ => Ok(None),
        }
    }
}

/// Whether `world` has more than one rank.
pub fn is_distributed(world: Option<&World>) -> bool {
    world.is_some_and(|w| w.size() > 1)
}

/// `"rank r of K: "` for messages of a distributed run, empty otherwise.
pub fn rank_prefix(world: Option<&World>) -> String {
    match world {
        Some(w) if w.size() > 1 => format!("rank {} of {}: ", w.rank(), w.size()),
        _ => String::new(),
    }
}

/// Refuses a flag that a distributed run does not support.
pub fn refuse_flag(world: Option<&World>, flag: &str, given: bool) -> Result<()> {
    if given && is_distributed(world) {
        return Err(Error::invalid(flag, "is not supported in a distributed run (mpirun -n K > 1)"));
    }
    Ok(())
}
