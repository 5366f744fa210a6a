//! Augmentation multiplicity's per-example kernels (`kernels/views.cu`): one example's gradient sum
//! over its views averaged in place with its squares summed per parameter (a fixed block reduction:
//! deterministic), its squared norm per group, and its clipped average added into the step's clipped
//! sum (a select where the factor is 0). [`crate::trainer::GpuModel`]'s step with views launches them
//! around the device program and `dp_clip_factors`.

use cudarc::driver::sys::CUdeviceptr;
use cudarc::driver::{LaunchConfig, PushKernelArg};

use crate::device::{driver, Gpu};
use crate::error::Result;
use crate::noise::THREADS;

/// The CUDA C source.
pub const SOURCE: &str = include_str!("../kernels/views.cu");

/// The kernels of [`SOURCE`], in the order [`Gpu`] loads them.
pub const ENTRIES: &[&str] = &["dp_views_average_squares", "dp_views_group_norms", "dp_views_accumulate"];

/// Values each thread of a range's blocks averages, at least, before the range takes another block.
const VALUES_PER_THREAD: usize = 8;

/// The most blocks per range: enough to fill a GPU on a model's largest parameter.
const MAX_BLOCKS_PER_RANGE: usize = 64;

/// The blocks of each range in `Gpu::queue_views_average_squares`: a model's constant (so its
/// partial sums, hence its norms, are the same at every step), from its largest parameter.
pub fn blocks_per_range(longest: usize) -> usize {
    longest.div_ceil(THREADS as usize * VALUES_PER_THREAD).clamp(1, MAX_BLOCKS_PER_RANGE)
}

/// The trained parameters as ranges of the trained gradient, on the device: offsets, lengths and
/// groups, one value each per range, in `M::PARAMS` order.
#[derive(Debug, Clone, Copy)]
pub struct ViewsRanges {
    pub offsets: CUdeviceptr,
    pub lens: CUdeviceptr,
    pub groups: CUdeviceptr,
    /// How many.
    pub count: usize,
    /// The blocks per range ([`blocks_per_range`]).
    pub blocks: usize,
}

impl Gpu {
    /// Queues the average of the gradient sum at `grad` (`inverse` = 1/K) in place, and each range's
    /// partial sums of its squares into `partials` (`ranges.count · ranges.blocks` doubles).
    ///
    /// # Safety
    /// `grad` holds every range's values (`f32`); the ranges' arrays hold `ranges.count` `u64`s each;
    /// `partials` holds `ranges.count · ranges.blocks` `f64`s.
    pub(crate) unsafe fn queue_views_average_squares(
        &self,
        grad: CUdeviceptr,
        inverse: f32,
        ranges: ViewsRanges,
        partials: CUdeviceptr,
    ) -> Result<()> {
        if ranges.count == 0 {
            return Ok(());
        }
        let blocks = ranges.blocks as u64;
        let config = LaunchConfig {
            grid_dim: (ranges.blocks as u32, ranges.count as u32, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments match dp_views_average_squares; the caller vouches for the lengths.
        unsafe {
            self.stream
                .launch_builder(&self.views[0])
                .arg(&grad)
                .arg(&inverse)
                .arg(&ranges.offsets)
                .arg(&ranges.lens)
                .arg(&blocks)
                .arg(&partials)
                .launch(config)
                .map_err(driver("launching dp_views_average_squares"))?;
        }
        Ok(())
    }

    /// Queues the `groups` squared norms into `sq_norms` (OVERWRITTEN) from the partial sums.
    ///
    /// # Safety
    /// As [`queue_views_average_squares`](Self::queue_views_average_squares); `sq_norms` holds
    /// `groups` `f32`s, and every range's group is below `groups`.
    pub(crate) unsafe fn queue_views_group_norms(
        &self,
        partials: CUdeviceptr,
        ranges: ViewsRanges,
        groups: usize,
        sq_norms: CUdeviceptr,
    ) -> Result<()> {
        let (blocks, count, groups) = (ranges.blocks as u64, ranges.count as u64, groups as u64);
        let config = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (1, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: the arguments match dp_views_group_norms; the caller vouches for the lengths.
        unsafe {
            self.stream
                .launch_builder(&self.views[1])
                .arg(&partials)
                .arg(&blocks)
                .arg(&ranges.groups)
                .arg(&count)
                .arg(&groups)
                .arg(&sq_norms)
                .launch(config)
                .map_err(driver("launching dp_views_group_norms"))?;
        }
        Ok(())
    }

    /// Queues `sum += factor · average` per range (its group's factor; `sum` unchanged where it is 0).
    ///
    /// # Safety
    /// `sum` and `average` hold every range's values (`f32`), `factors` one per group; the ranges'
    /// arrays as [`queue_views_average_squares`](Self::queue_views_average_squares)'.
    pub(crate) unsafe fn queue_views_accumulate(
        &self,
        sum: CUdeviceptr,
        average: CUdeviceptr,
        factors: CUdeviceptr,
        ranges: ViewsRanges,
    ) -> Result<()> {
        if ranges.count == 0 {
            return Ok(());
        }
        let config = LaunchConfig {
            grid_dim: ((ranges.blocks * VALUES_PER_THREAD) as u32, ranges.count as u32, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments match dp_views_accumulate; the caller vouches for the lengths.
        unsafe {
            self.stream
                .launch_builder(&self.views[2])
                .arg(&sum)
                .arg(&average)
                .arg(&factors)
                .arg(&ranges.offsets)
                .arg(&ranges.lens)
                .arg(&ranges.groups)
                .launch(config)
                .map_err(driver("launching dp_views_accumulate"))?;
        }
        Ok(())
    }
}
