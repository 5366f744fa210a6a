//! [`GpuModel`]'s forward alone, for evaluation
//! ([`DeviceTraining::outputs`](dp_runtime::device::DeviceTraining::outputs)): a held-out set's
//! examples copied in chunk by chunk (at most the arena's room at once), the device program's forward
//! launched one by one (no graph: evaluation runs once per epoch), and the outputs copied back,
//! widened from bf16 first where the program stores them in bf16. The trainer's batch staged for the
//! next step keeps its pinned copy, and its copy into the regions is queued again before that step.

use cudarc::driver::result as drv;
use dp_runtime::device::{Region, Span};
use dp_runtime::DpModel;

use super::{inputs_of, program, GpuModel, Inputs};
use crate::device::driver;
use crate::error::{CudaError, Result};

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
            let src = ops.in_f32(M::device_outputs(size).map_err(program)?).map_err(program)?;
            // SAFETY: `src` holds the `size · output_len` outputs (the program's output span, checked
            // against its region by `in_f32`), and `out` has that length.
            unsafe { drv::memcpy_dtoh_async(out, src, s.cu_stream()) }
                .map_err(driver("copying outputs back"))?;
            self.transfers.to_host += 1;
            s.synchronize().map_err(driver("evaluating"))?;
        }
        // The inputs of a batch staged for the next step were overwritten: its copy is queued again.
        if let Some(staged) = &mut self.staged {
            staged.copied = false;
        }
        Ok(())
    }
}
