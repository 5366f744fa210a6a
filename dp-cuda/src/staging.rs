//! Page-locked host memory that a step's copies in go through: the batch's inputs, its labels and the
//! step's key are written into one pinned buffer on the host, then copied to their regions by DMA
//! without the driver's staging copy that pageable memory needs (which, for a small model's step,
//! costs as much as the launches). The buffer is written only when the stream is idle, so a copy still
//! in flight is never overwritten.

use cudarc::driver::sys::CUdeviceptr;
use cudarc::driver::{result as drv, PinnedHostSlice};

use crate::device::{driver, Gpu};
use crate::error::Result;

/// One pinned buffer of 32-bit words, handed out as consecutive pieces per step.
pub struct Staging {
    words: PinnedHostSlice<u32>,
    /// Words handed out since the last [`Staging::start`].
    used: usize,
}

impl std::fmt::Debug for Staging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staging").field("words", &self.words.len()).finish()
    }
}

impl Staging {
    /// Room for `words` 32-bit values.
    pub fn new(gpu: &Gpu, words: usize) -> Result<Self> {
        // SAFETY: the memory is unset; every piece is written before it is copied.
        let words = unsafe { gpu.stream.context().alloc_pinned::<u32>(words.max(1)) }
            .map_err(driver("allocating pinned host memory"))?;
        Ok(Staging { words, used: 0 })
    }

    /// The words it has room for.
    pub fn capacity(&self) -> usize {
        self.words.len()
    }

    /// A new step: waits for the stream to be idle (the previous step's copies done), then hands
    /// pieces out from the start again.
    pub fn start(&mut self, gpu: &Gpu) -> Result<()> {
        gpu.stream.synchronize().map_err(driver("waiting for the previous copies"))?;
        self.used = 0;
        Ok(())
    }

    /// Writes `values` (plain values of any type whose size is a whole number of 32-bit words: their
    /// bits) into the next piece and queues its copy to `dst` on the stream.
    pub fn copy_in<T: Copy>(&mut self, gpu: &Gpu, values: &[T], dst: CUdeviceptr) -> Result<()> {
        const { assert!(std::mem::size_of::<T>() > 0 && std::mem::size_of::<T>().is_multiple_of(4)) };
        let (from, len) = (self.used, values.len() * (std::mem::size_of::<T>() / 4));
        if from + len > self.words.len() {
            return Err(crate::error::CudaError::Mismatch(format!(
                "{len} values past the {} words of pinned memory ({from} used)",
                self.words.len()
            )));
        }
        let ptr = self.words.as_mut_ptr().map_err(driver("reaching pinned host memory"))?;
        // SAFETY: `from + len` words are inside the allocation (checked above); T is `len` words of
        // plain data in all, copied as bits; no copy reads this piece (the stream was idle at `start`, and pieces
        // handed out since do not overlap).
        let piece = unsafe {
            let piece = std::slice::from_raw_parts_mut(ptr.add(from), len);
            std::ptr::copy_nonoverlapping(values.as_ptr().cast::<u32>(), piece.as_mut_ptr(), len);
            &*piece
        };
        // SAFETY: `dst` holds `len` words (the caller's span, checked against its region); the piece
        // stays untouched until the next `start` waits for this copy.
        unsafe { drv::memcpy_htod_async(dst, piece, gpu.stream.cu_stream()) }
            .map_err(driver("copying in from pinned memory"))?;
        self.used += len;
        Ok(())
    }
}
