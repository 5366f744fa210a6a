//! [`GpuModel`]'s forward alone, for evaluation
//! ([`DeviceTraining::outputs`](dp_runtime::device::DeviceTraining::outputs)): a held-out set's
//! examples copied in chunk by chunk (at most the arena's room at once), the device program's forward
//! launched one by one (no graph: evaluation runs once per epoch), and the outputs copied back from
//! their store, those stored in bf16 widened on the host (exactly). The trainer's batch staged for the
//! next step keeps its pinned copy, and its copy into the regions is queued again before that step (a
//! batch landed beside a step is untouched: it is moved into the regions when that step is queued).

use cudarc::driver::result as drv;
use dp_runtime::device::{Region, Span};
use dp_runtime::DpModel;

use super::{inputs_of, program, GpuModel, Inputs};
use crate::device::driver;
use crate::error::{CudaError, Result};
use crate::program::ValueType;

impl<M: DpModel> GpuModel<M> {
    /// The model's outputs for `n` examples (`inputs`) under the parameters the device holds, into
    /// `outputs` (`n · output_len` values, as the CPU's `DpModel::forward` lays them out), in
    /// chunks of at most the arena's room. Not while a step is queued.
    pub fn outputs(&mut self, inputs: &[M::Input], n: usize, outputs: &mut [f32]) -> Result<()> {
        self.refuse_in_flight()?;
        let (input_len, output_len) = (M::input_len(), M::LOSS.output_len());
        if inputs.len() != n * input_len || outputs.len() != n * output_len {
            return Err(CudaError::Mismatch(format!(
                "{}: {} inputs and room for {} outputs of {n} examples",
                M::NAME,
                inputs.len(),
                outputs.len()
            )));
        }
        let room = self.max_batch;
        let s = self.gpu.stream.clone();
        // The inputs of a batch staged for the next step are overwritten below (also if a launch
        // fails): its copy is queued again before that step.
        if let (Some(staged), true) = (&mut self.staged, n > 0) {
            // Landed words are not the regions: they are moved when the step is queued.
            if staged.copies == super::overlap::Copies::Queued {
                staged.copies = super::overlap::Copies::NotQueued;
            }
        }
        for start in (0..n).step_by(room) {
            let size = room.min(n - start);
            let chunk = &inputs[start * input_len..(start + size) * input_len];
            let out = &mut outputs[start * output_len..(start + size) * output_len];
            // Pageable copies: the driver has taken the values when the call returns, and the
            // outputs are there when the copy back returns.
            match inputs_of::<M>(chunk)? {
                Inputs::Dense(values) => {
                    let dst = self.memory.ptr(Span::new(Region::Inputs, 0, values.len())).map_err(program)?;
                    // SAFETY: the span was checked to hold `values.len()` values of its region.
                    unsafe { drv::memcpy_htod_async(dst, values, s.cu_stream()) }
                }
                Inputs::Tokens(ids) => {
                    let dst = self.memory.ptr(Span::new(Region::Tokens, 0, ids.len())).map_err(program)?;
                    // SAFETY: as above; the Tokens region holds 32-bit ids bit for bit.
                    unsafe { drv::memcpy_htod_async(dst, ids, s.cu_stream()) }
                }
            }
            .map_err(driver("copying an evaluation chunk in"))?;
            self.transfers.to_device += 1;
            let mut ops = self.ops().rounding_each_weight_once();
            M::device_forward(&mut ops, size).map_err(program)?;
            let span = M::device_outputs(size).map_err(program)?;
            if span.len != out.len() {
                return Err(CudaError::Mismatch(format!(
                    "{}: an output span of {} values for {} outputs",
                    M::NAME,
                    span.len,
                    out.len()
                )));
            }
            let addresses = self.memory.addresses();
            let stored = addresses.stored_type(span).map_err(program)?;
            let src = addresses.address(span, stored).map_err(program)?;
            match stored {
                // SAFETY: `src` holds the span's `out.len()` values of its stored type (checked against
                // its store by `address`).
                ValueType::F32 => unsafe { drv::memcpy_dtoh_async(out, src, s.cu_stream()) },
                ValueType::Bf16 => {
                    let mut bits = vec![0u16; out.len()];
                    // SAFETY: as above, in bf16; a copy into pageable memory has ended when it returns.
                    let copied = unsafe { drv::memcpy_dtoh_async(&mut bits[..], src, s.cu_stream()) };
                    // bf16 to f32 is exact: the bits moved up.
                    for (o, b) in out.iter_mut().zip(&bits) {
                        *o = f32::from_bits(u32::from(*b) << 16);
                    }
                    copied
                }
            }
            .map_err(driver("copying outputs back"))?;
            self.transfers.to_host += 1;
            s.synchronize().map_err(driver("evaluating"))?;
        }
        Ok(())
    }
}
