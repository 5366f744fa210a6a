//! Page-locked host memory that a step's copies in go through: the batch's inputs, its labels and the
//! step's key are written into a pinned buffer on the host, then copied to their regions by DMA
//! without the driver's staging copy that pageable memory needs (which, for a small model's step,
//! costs as much as the launches).
//!
//! A buffer is written again only after the copies out of it have run (its event), not after the
//! whole stream is idle: so a pair of them ([`StagingPair`]) lets the host write the next step's batch
//! into one while the step in flight still owns the other (docs/GPU.md, "Overlapping the host's work
//! with a step").

use cudarc::driver::sys::CUdeviceptr;
use cudarc::driver::{result as drv, CudaEvent, CudaStream, PinnedHostSlice};

use crate::device::{driver, Gpu};
use crate::error::{CudaError, Result};

/// Where a written piece lies in its buffer, in 32-bit words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    from: usize,
    len: usize,
}

impl Piece {
    /// Its first word's index in the buffer.
    pub fn offset(self) -> usize {
        self.from
    }

    /// Its length in words.
    pub fn len(self) -> usize {
        self.len
    }

    /// Whether it has no words.
    pub fn is_empty(self) -> bool {
        self.len == 0
    }
}

/// One pinned buffer of 32-bit words, handed out as consecutive pieces per step.
pub struct Staging {
    words: PinnedHostSlice<u32>,
    /// Words handed out since the last [`Staging::start`].
    used: usize,
    /// Recorded on the GPU's stream after each copy out of the buffer there.
    copied: CudaEvent,
    /// Recorded on the landing stream after each copy out of the buffer there (`crate::landing`).
    copied_beside: CudaEvent,
}

impl std::fmt::Debug for Staging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staging").field("words", &self.words.len()).finish()
    }
}

impl Staging {
    /// Room for `words` 32-bit values.
    pub fn new(gpu: &Gpu, words: usize) -> Result<Self> {
        let context = gpu.stream.context();
        // SAFETY: the memory is unset; every piece is written before it is copied.
        let words = unsafe { context.alloc_pinned::<u32>(words.max(1)) }
            .map_err(driver("allocating pinned host memory"))?;
        let copied = context.new_event(None).map_err(driver("creating a copy's event"))?;
        let copied_beside = context.new_event(None).map_err(driver("creating a copy's event"))?;
        Ok(Staging { words, used: 0, copied, copied_beside })
    }

    /// The words it has room for.
    pub fn capacity(&self) -> usize {
        self.words.len()
    }

    /// Hands pieces out from the start again, once the copies queued out of the buffer have run (the
    /// stream may still be busy with anything queued after them).
    pub fn start(&mut self) -> Result<()> {
        self.copied.synchronize().map_err(driver("waiting for the previous copies"))?;
        self.copied_beside.synchronize().map_err(driver("waiting for the previous copies"))?;
        self.used = 0;
        Ok(())
    }

    /// Writes `values` (plain values of any type whose size is a whole number of 32-bit words: their
    /// bits) into the next piece, on the host only.
    pub fn write<T: Copy>(&mut self, values: &[T]) -> Result<Piece> {
        const { assert!(std::mem::size_of::<T>() > 0 && std::mem::size_of::<T>().is_multiple_of(4)) };
        let (from, len) = (self.used, values.len() * (std::mem::size_of::<T>() / 4));
        if from + len > self.words.len() {
            return Err(CudaError::Mismatch(format!(
                "{len} values past the {} words of pinned memory ({from} used)",
                self.words.len()
            )));
        }
        let ptr = self.words.as_mut_ptr().map_err(driver("reaching pinned host memory"))?;
        // SAFETY: `from + len` words are inside the allocation (checked above); T is `len` words of
        // plain data in all, copied as bits; no copy reads this piece (the copies out of the buffer
        // had run at `start`, and pieces handed out since do not overlap).
        unsafe {
            std::ptr::copy_nonoverlapping(values.as_ptr().cast::<u32>(), ptr.add(from), len);
        }
        self.used += len;
        Ok(Piece { from, len })
    }

    /// Queues the copy of a written `piece` to `dst` on the GPU's stream.
    pub fn queue_copy(&mut self, gpu: &Gpu, piece: Piece, dst: CUdeviceptr) -> Result<()> {
        self.queue_copy_on(&gpu.stream, piece, dst, false)
    }

    /// Queues the copy of a written `piece` to `dst` on the stream a batch lands on beside a step
    /// (`crate::landing`), not the GPU's.
    pub fn queue_copy_beside(&mut self, stream: &CudaStream, piece: Piece, dst: CUdeviceptr) -> Result<()> {
        self.queue_copy_on(stream, piece, dst, true)
    }

    /// The copy, and after it the event of its stream's copies (`beside`: the landing stream's), which
    /// [`start`](Self::start) waits for with the other: an event waits for its last record only.
    fn queue_copy_on(
        &mut self,
        stream: &CudaStream,
        piece: Piece,
        dst: CUdeviceptr,
        beside: bool,
    ) -> Result<()> {
        if piece.from + piece.len > self.used {
            return Err(CudaError::Mismatch("a piece of pinned memory not written since the start".into()));
        }
        let ptr = self.words.as_mut_ptr().map_err(driver("reaching pinned host memory"))?;
        // SAFETY: the piece lies inside the words written since `start` (checked above).
        let piece = unsafe { std::slice::from_raw_parts(ptr.add(piece.from).cast_const(), piece.len) };
        // SAFETY: `dst` holds the piece's words (the caller's span, checked against its region); the
        // piece stays untouched until the next `start` waits for the event recorded below.
        unsafe { drv::memcpy_htod_async(dst, piece, stream.cu_stream()) }
            .map_err(driver("copying in from pinned memory"))?;
        let event = if beside { &self.copied_beside } else { &self.copied };
        event.record(stream).map_err(driver("recording a copy's event"))
    }

    /// [`write`](Self::write) then [`queue_copy`](Self::queue_copy).
    pub fn copy_in<T: Copy>(&mut self, gpu: &Gpu, values: &[T], dst: CUdeviceptr) -> Result<()> {
        let piece = self.write(values)?;
        self.queue_copy(gpu, piece, dst)
    }
}

/// Two stagings used in turn: the next step's batch is written into one while the copies of the step
/// in flight may still read the other.
#[derive(Debug)]
pub struct StagingPair {
    slots: [Staging; 2],
    current: usize,
}

impl StagingPair {
    /// Two buffers of `words` each.
    pub fn new(gpu: &Gpu, words: usize) -> Result<Self> {
        Ok(StagingPair { slots: [Staging::new(gpu, words)?, Staging::new(gpu, words)?], current: 0 })
    }

    /// Turns to the other buffer, waits for the copies out of it, and grows it to `words` if it
    /// is smaller (the pinned memory follows the largest batch). [`current_slot`](Self::current_slot)
    /// names it from then on.
    pub fn next(&mut self, gpu: &Gpu, words: usize) -> Result<&mut Staging> {
        self.current = 1 - self.current;
        let slot = &mut self.slots[self.current];
        // Before a smaller buffer is freed, too: no copy out of it may still be in flight.
        slot.start()?;
        if slot.capacity() < words {
            *slot = Staging::new(gpu, words)?;
        }
        Ok(slot)
    }

    /// Grows the buffer [`next`](Self::next) will turn to, to `words` if it is smaller, once the
    /// copies out of it have run (ahead of time: growing it while a step runs would wait for the
    /// step, as freeing pinned memory may).
    pub fn reserve_other(&mut self, gpu: &Gpu, words: usize) -> Result<()> {
        let other = &mut self.slots[1 - self.current];
        if other.capacity() < words {
            other.start()?;
            *other = Staging::new(gpu, words)?;
        }
        Ok(())
    }

    /// The buffer [`next`](Self::next) last turned to.
    pub fn current(&mut self) -> &mut Staging {
        &mut self.slots[self.current]
    }

    /// Which of the two buffers [`next`](Self::next) last turned to, 0 or 1.
    pub fn current_slot(&self) -> usize {
        self.current
    }

    /// Buffer `slot` (0 or 1, as [`current_slot`](Self::current_slot) named it).
    pub fn slot(&mut self, slot: usize) -> &mut Staging {
        &mut self.slots[slot & 1]
    }
}
