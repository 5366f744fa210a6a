//! Data-parallel DP-SGD: K ranks, each with a disjoint shard of the training data, one Poisson
//! sample of the whole dataset, one noise draw per step (on rank 0), one ledger. The semantics and
//! the proof that this is the single-process mechanism are in `docs/DISTRIBUTED.md`.
//!
//! - [`group`]: the [`Group`] trait, the collectives a run needs;
//! - [`threads`]: [`ThreadGroup`], ranks as threads (tests, and K = 1 through the same code);
//! - `mpi` (feature `mpi`): `MpiGroup`, the ranks of an `mpirun` job;
//! - [`step`]: one distributed step, and the agreement on failures.

pub mod group;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod step;
pub mod threads;

use std::ops::Range;

pub use group::Group;
#[cfg(feature = "mpi")]
pub use mpi::MpiGroup;
pub use threads::ThreadGroup;

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::InputElem;

/// Where this rank's training examples sit in the whole dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// The global index of the shard's first example.
    pub offset: usize,
    /// N, the examples of the whole dataset (all shards).
    pub global_examples: usize,
}

impl Shard {
    /// The shard of `rank` among `ranks` in the split of [`shard_range`].
    pub fn of_rank(global_examples: usize, rank: usize, ranks: usize) -> Shard {
        Shard { offset: shard_range(global_examples, rank, ranks).start, global_examples }
    }
}

/// The global indices of `rank`'s shard when N = `global_examples` examples are split into `ranks`
/// contiguous shards whose sizes differ by at most one: `[⌊rN/K⌋, ⌊(r+1)N/K⌋)`.
pub fn shard_range(global_examples: usize, rank: usize, ranks: usize) -> Range<usize> {
    let bound = |r: usize| (r as u128 * global_examples as u128 / ranks as u128) as usize;
    bound(rank)..bound(rank + 1)
}

/// A copy of the examples of `range` of `data`: the shard a rank keeps.
pub fn take_shard<T: InputElem>(data: &Dataset<T>, range: Range<usize>) -> Result<Dataset<T>> {
    if range.start > range.end || range.end > data.len() {
        return Err(Error::invalid(
            "shard",
            format!("examples {}..{} are not within the {} examples", range.start, range.end, data.len()),
        ));
    }
    let (e, l) = (data.example_len(), data.label_len);
    Dataset::new(
        data.inputs[range.start * e..range.end * e].to_vec(),
        data.labels[range.start * l..range.end * l].to_vec(),
        data.example_shape.clone(),
        l,
    )
}

/// The indices of `global` (ascending global indices of a batch) that fall in `shard`, as indices into
/// the shard, written into `out` (cleared first).
pub fn indices_in_shard(global: &[usize], shard: Range<usize>, out: &mut Vec<usize>) {
    let first = global.partition_point(|&i| i < shard.start);
    let last = global.partition_point(|&i| i < shard.end);
    out.clear();
    out.extend(global[first..last].iter().map(|&i| i - shard.start));
}

/// The world size an MPI launcher announces to this process (Open MPI's `OMPI_COMM_WORLD_SIZE`, MPICH's `PMI_SIZE`), if it
/// was started by one: `dp train` trains distributed under a launcher, and a build without the `mpi`
/// feature refuses to run as one of K > 1 copies that would each train alone.
pub fn launcher_world_size() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"].iter().find_map(|name| std::env::var(name).ok()?.trim().parse().ok())
}

/// This process's rank among the ranks of its node, as an MPI launcher announces it (Open MPI's
/// `OMPI_COMM_WORLD_LOCAL_RANK`, MPICH's `MPI_LOCALRANKID`), if it was started by one: `dp train
/// --device cuda` picks its node's GPU by it.
pub fn launcher_local_rank() -> Option<usize> {
    ["OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID"]
        .iter()
        .find_map(|name| std::env::var(name).ok()?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_examples() {
        for n in [1usize, 2, 7, 60_000, 60_001] {
            for k in 1..=9usize {
                let mut next = 0;
                for r in 0..k {
                    let range = shard_range(n, r, k);
                    assert_eq!(range.start, next, "n {n} k {k} r {r}");
                    assert!(range.len() == n / k || range.len() == n / k + 1);
                    next = range.end;
                }
                assert_eq!(next, n);
            }
        }
    }

    /// With one shared stream the shards' kept indices are exactly the single-process batch; with a
    /// stream per rank every example is still kept with probability q, independently: the union is a
    /// Poisson sample of the whole dataset at rate q.
    #[test]
    fn the_shards_batches_make_a_poisson_sample_of_the_whole_dataset() {
        use crate::sampling::PoissonSampler;
        let (n, k, q, steps) = (30usize, 3usize, 0.2, 20_000usize);
        let sampler = PoissonSampler::new(n, q);
        let mut shared = crate::rng::seeded(1);
        let mut own: Vec<_> = (0..k).map(|r| crate::rng::seeded(10 + r as u64)).collect();
        let (mut global, mut local) = (Vec::new(), Vec::new());
        let mut kept = vec![0usize; n];
        let mut both_kept = 0usize; // examples 0 (rank 0) and 29 (rank 2) in the same batch
        for _ in 0..steps {
            sampler.sample(&mut shared, &mut global);
            let mut union = Vec::new();
            for r in 0..k {
                let range = shard_range(n, r, k);
                indices_in_shard(&global, range.clone(), &mut local);
                union.extend(local.iter().map(|&i| i + range.start));
            }
            assert_eq!(union, global);

            let mut batch = Vec::new();
            for (r, rng) in own.iter_mut().enumerate() {
                let range = shard_range(n, r, k);
                sampler.sample(rng, &mut global);
                indices_in_shard(&global, range.clone(), &mut local);
                batch.extend(local.iter().map(|&i| i + range.start));
            }
            for &i in &batch {
                kept[i] += 1;
            }
            both_kept += usize::from(batch.contains(&0) && batch.contains(&29));
        }
        // Binomial(20000, 0.2): standard deviation 57; 5 standard deviations.
        for (i, &count) in kept.iter().enumerate() {
            assert!((count as f64 - q * steps as f64).abs() < 285.0, "example {i} kept {count} times");
        }
        // Independence across shards: P(both) = q² = 0.04 (sd 28 of 800).
        assert!((both_kept as f64 - q * q * steps as f64).abs() < 140.0, "both kept {both_kept} times");
    }

    #[test]
    fn a_shard_holds_its_examples() {
        let data = Dataset::new(
            (0..20).map(|v| v as f32).collect(),
            (0..10).map(|v| v as f32).collect(),
            vec![2],
            1,
        )
        .unwrap();
        let shard = take_shard(&data, 3..6).unwrap();
        assert_eq!(shard.labels, vec![3.0, 4.0, 5.0]);
        assert_eq!(shard.inputs, vec![6.0, 7.0, 8.0, 9.0, 10.0, 11.0]);
        assert!(take_shard(&data, 8..11).is_err());
    }
}
