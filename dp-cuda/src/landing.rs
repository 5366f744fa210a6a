//! The next step's batch copied in beside the step in flight (docs/GPU.md, "The copies in beside the
//! step").
//!
//! A step reads its batch from the regions of inputs and labels, whose addresses its graph holds, so
//! the next batch cannot be copied there while the step runs; queued behind it on the GPU's stream,
//! its copies in cross the bus between the two steps, on the next step's path. A [`Landing`] is a
//! device mirror of a pinned buffer's words with a stream of its own: the next batch is copied into it
//! over the bus while the step computes (a copy engine beside the multiprocessors), and when the next
//! step is queued the GPU's stream waits for those copies and moves the batch into the regions with
//! device-to-device copies, at the device memory's bandwidth.
//!
//! Two events order the streams: `landed`, recorded on the landing stream after a batch's copies in,
//! which the GPU's stream waits for before it moves the batch; `moved`, recorded on the GPU's stream
//! after the move, which the landing stream waits for before the next batch overwrites the buffer.

use std::sync::Arc;

use cudarc::driver::sys::CUdeviceptr;
use cudarc::driver::{result as drv, CudaEvent, CudaSlice, CudaStream, DevicePtr};

use crate::device::{driver, Gpu};
use crate::error::{CudaError, Result};
use crate::staging::Piece;

/// Device words that mirror a pinned buffer's, and the stream that copies a batch into them.
pub struct Landing {
    stream: Arc<CudaStream>,
    /// Allocated on `stream`: freed there, after the copies queued into it.
    words: CudaSlice<u32>,
    landed: CudaEvent,
    moved: CudaEvent,
}

impl std::fmt::Debug for Landing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Landing").field("words", &self.words.len()).finish()
    }
}

impl Landing {
    /// Room for `words` 32-bit values (a pinned buffer's), on a stream of its own.
    pub fn new(gpu: &Gpu, words: usize) -> Result<Self> {
        let context = gpu.stream.context();
        let stream = context.new_stream().map_err(driver("creating the landing stream"))?;
        // SAFETY: every word a move reads was copied in first (a piece of the pinned buffer).
        let words =
            unsafe { stream.alloc::<u32>(words.max(1)) }.map_err(driver("allocating the landing words"))?;
        let landed = context.new_event(None).map_err(driver("creating the landing's event"))?;
        let moved = context.new_event(None).map_err(driver("creating the landing's event"))?;
        Ok(Landing { stream, words, landed, moved })
    }

    /// The words it has room for.
    pub fn capacity(&self) -> usize {
        self.words.len()
    }

    /// Room for `words` (the buffer allocated again if it has less, after the last move out of it;
    /// the old one freed on the landing stream after the copies queued into it).
    pub fn reserve(&mut self, words: usize) -> Result<()> {
        if self.words.len() < words {
            self.stream.wait(&self.moved).map_err(driver("waiting for the landed batch's move"))?;
            // SAFETY: as in `new`.
            self.words =
                unsafe { self.stream.alloc::<u32>(words) }.map_err(driver("allocating the landing words"))?;
        }
        Ok(())
    }

    /// The landing stream, after it has been made to wait for the last batch's move out: the copies
    /// queued on it next may overwrite the words.
    pub fn stream_for_copies(&self) -> Result<&Arc<CudaStream>> {
        self.stream.wait(&self.moved).map_err(driver("waiting for the landed batch's move"))?;
        Ok(&self.stream)
    }

    /// The device address of `piece`'s words (at the same offset as in the pinned buffer).
    pub fn address(&self, piece: Piece) -> Result<CUdeviceptr> {
        self.check(piece)?;
        let base = self.words.device_ptr(&self.stream).0;
        Ok(base + (piece.offset() * std::mem::size_of::<u32>()) as u64)
    }

    /// Records, on the landing stream, that the copies queued on it so far have landed.
    pub fn mark_landed(&self) -> Result<()> {
        self.landed.record(&self.stream).map_err(driver("recording the landing"))
    }

    /// Makes the GPU's stream wait for the landed copies: the moves queued on it next read them.
    pub fn await_landed(&self, gpu: &Gpu) -> Result<()> {
        gpu.stream.wait(&self.landed).map_err(driver("waiting for the landed batch"))
    }

    /// Queues on the GPU's stream the move of `piece`'s landed words to `dst` (which holds them: the
    /// caller's span, checked against its region), after [`await_landed`](Self::await_landed).
    pub fn queue_move(&self, gpu: &Gpu, piece: Piece, dst: CUdeviceptr) -> Result<()> {
        let src = self.address(piece)?;
        let bytes = piece.len() * std::mem::size_of::<u32>();
        // SAFETY: `src` holds the piece's words (checked above); `dst` holds as many (the caller's).
        unsafe { drv::memcpy_dtod_async(dst, src, bytes, gpu.stream.cu_stream()) }
            .map_err(driver("moving the landed batch into its regions"))
    }

    /// Records, on the GPU's stream, that the landed batch has been moved out (after its moves).
    pub fn mark_moved(&self, gpu: &Gpu) -> Result<()> {
        self.moved.record(&gpu.stream).map_err(driver("recording the landed batch's move"))
    }

    /// Waits on the host for everything queued on the landing stream.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(driver("waiting for the landing stream"))
    }

    fn check(&self, piece: Piece) -> Result<()> {
        if piece.offset() + piece.len() > self.words.len() {
            return Err(CudaError::Mismatch(format!(
                "a piece of {} words at {} past the {} landing words",
                piece.len(),
                piece.offset(),
                self.words.len()
            )));
        }
        Ok(())
    }
}

/// The words are freed on the landing stream (stream-ordered, after the copies queued into them),
/// once that stream has waited for the last move out of them on the GPU's stream.
impl Drop for Landing {
    fn drop(&mut self) {
        // An error here (a failed context) leaves nothing to wait for.
        let _ = self.stream.wait(&self.moved);
    }
}
