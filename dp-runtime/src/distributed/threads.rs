//! [`ThreadGroup`]: K ranks as threads of one process, exchanging through shared memory. It is the
//! transport the tests use to run the distributed code path without MPI; its reduce adds the ranks'
//! values in rank order, in f32, like a linear `MPI_Reduce`.

use std::sync::{Arc, Barrier, Mutex};

use super::group::Group;

/// What the ranks of one [`ThreadGroup`] share.
struct Shared {
    barrier: Barrier,
    /// One slot per rank: its contribution to the collective under way.
    slots: Mutex<Vec<Slot>>,
}

#[derive(Default, Clone)]
struct Slot {
    floats: Vec<f32>,
    doubles: Vec<f64>,
    bytes: Vec<u8>,
    failed: bool,
}

/// One rank of a group of threads; make the K handles with [`ThreadGroup::new`] and move one into
/// each thread.
pub struct ThreadGroup {
    rank: usize,
    size: usize,
    shared: Arc<Shared>,
}

impl ThreadGroup {
    /// The handles of a group of `size` ranks (rank i at index i).
    pub fn new(size: usize) -> Vec<ThreadGroup> {
        assert!(size > 0, "a group has at least one rank");
        let shared =
            Arc::new(Shared { barrier: Barrier::new(size), slots: Mutex::new(vec![Slot::default(); size]) });
        (0..size).map(|rank| ThreadGroup { rank, size, shared: Arc::clone(&shared) }).collect()
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        // A rank that panicked poisons the lock; the others cannot go on meaningfully either.
        self.shared.slots.lock().expect("a rank of the thread group panicked")
    }

    /// Runs `write` on this rank's slot, waits for every rank, runs `read` on all slots, waits again
    /// (so that no slot is overwritten by the next collective before every rank has read it).
    fn exchange<T>(&self, write: impl FnOnce(&mut Slot), read: impl FnOnce(&[Slot]) -> T) -> T {
        write(&mut self.slots()[self.rank]);
        self.shared.barrier.wait();
        let result = read(&self.slots());
        self.shared.barrier.wait();
        result
    }
}

impl Group for ThreadGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn sum_to_root(&mut self, local: &[f32], total: &mut [f32]) {
        let rank = self.rank;
        self.exchange(
            |slot| slot.floats = local.to_vec(),
            |slots| {
                if rank == 0 {
                    total.copy_from_slice(&slots[0].floats);
                    for slot in &slots[1..] {
                        for (t, &v) in total.iter_mut().zip(&slot.floats) {
                            *t += v;
                        }
                    }
                }
            },
        )
    }

    fn broadcast_from_root(&mut self, values: &mut [f64]) {
        let mine = (self.rank == 0).then(|| values.to_vec());
        self.exchange(
            |slot| {
                if let Some(mine) = mine {
                    slot.doubles = mine;
                }
            },
            |slots| values.copy_from_slice(&slots[0].doubles),
        )
    }

    fn broadcast_bytes(&mut self, root: usize, bytes: &mut [u8]) {
        let mine = (self.rank == root).then(|| bytes.to_vec());
        self.exchange(
            |slot| {
                if let Some(mine) = mine {
                    slot.bytes = mine;
                }
            },
            |slots| bytes.copy_from_slice(&slots[root].bytes),
        )
    }

    fn lowest_failed(&mut self, failed: bool) -> Option<usize> {
        self.exchange(|slot| slot.failed = failed, |slots| slots.iter().position(|s| s.failed))
    }
}
