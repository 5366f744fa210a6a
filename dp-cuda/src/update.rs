//! The noisy update on the device (`kernels/update.cu`, one thread per coordinate): the values of
//! `NoisyGradient::with_drawn_noise` followed by [`dp_runtime::optim::Sgd`]'s step (momentum, Nesterov,
//! weight decay) or [`dp_runtime::optim::Adam`]'s (Adam or AdamW), with the normals of
//! [`crate::noise`]. The SGD launch is [`Gpu::sgd_noisy_update`](crate::device::Gpu::sgd_noisy_update);
//! Adam's is here, as is the fold of the parameters into their moving average (`Trainer::ema`).

use cudarc::driver::sys::CUdeviceptr;
use cudarc::driver::{DevicePtr, LaunchConfig, PushKernelArg};
use dp_runtime::device::DeviceAdam;
use dp_runtime::optim::Adam;

use crate::device::{driver, Gpu, SgdStep};
use crate::error::{CudaError, Result};
use crate::noise::THREADS;

/// The CUDA C source.
pub const SOURCE: &str = include_str!("../kernels/update.cu");

/// The kernels of [`SOURCE`], in the order [`Gpu`] loads them.
pub const ENTRIES: &[&str] = &["dp_sgd_noisy_update", "dp_adam_noisy_update", "dp_ema_fold"];

/// The scalars of one noisy update: SGD's or Adam's.
#[derive(Debug, Clone, Copy)]
pub enum UpdateStep {
    Sgd(SgdStep),
    Adam(AdamStep),
}

impl From<SgdStep> for UpdateStep {
    fn from(step: SgdStep) -> Self {
        UpdateStep::Sgd(step)
    }
}

impl From<AdamStep> for UpdateStep {
    fn from(step: AdamStep) -> Self {
        UpdateStep::Adam(step)
    }
}

/// The scalars of one Adam update.
#[derive(Debug, Clone, Copy)]
pub struct AdamStep {
    /// σ·C.
    pub noise_std: f64,
    /// 1 / expected batch size.
    pub inverse_batch: f64,
    /// The optimizer's settings at this step.
    pub adam: DeviceAdam,
}

/// The buffers of one Adam update.
#[derive(Debug)]
pub struct AdamState<'a> {
    /// The parameters, updated in place.
    pub params: &'a mut [f32],
    /// The first moment, updated in place.
    pub exp_avg: &'a mut [f32],
    /// The second moment, updated in place.
    pub exp_avg_sq: &'a mut [f32],
    /// The clipped sum.
    pub sum: &'a [f32],
    /// One standard normal per coordinate.
    pub z: &'a [f64],
}

/// The device addresses of one Adam update's buffers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AdamBuffers {
    pub params: CUdeviceptr,
    pub exp_avg: CUdeviceptr,
    pub exp_avg_sq: CUdeviceptr,
    pub sum: CUdeviceptr,
    pub z: CUdeviceptr,
}

impl Gpu {
    /// Queues `dp_adam_noisy_update` over `len` coordinates of `buffers` (`len` > 0): update number
    /// `update` (counting from 1), whose bias corrections are `Adam::bias_corrections`'s.
    ///
    /// # Safety
    /// Each address holds `len` values: `f32` for the parameters, moments and sum, `f64` for `z`.
    pub(crate) unsafe fn queue_adam_update(
        &self,
        buffers: AdamBuffers,
        len: usize,
        step: AdamStep,
        update: u64,
    ) -> Result<()> {
        let AdamStep { noise_std, inverse_batch, adam } = step;
        let (correction1, root_correction2) = Adam::bias_corrections(adam.beta1, adam.beta2, update);
        let decoupled = i32::from(adam.decoupled);
        let n = len as u64;
        let grid = u32::try_from(n.div_ceil(u64::from(THREADS))).expect("fewer than 2^40 parameters");
        let config = LaunchConfig { grid_dim: (grid, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 };
        let AdamBuffers { params, exp_avg, exp_avg_sq, sum, z } = buffers;
        // SAFETY: the arguments match dp_adam_noisy_update's signature; the caller vouches for the
        // buffers' lengths.
        unsafe {
            self.stream
                .launch_builder(&self.adam_update)
                .arg(&params)
                .arg(&exp_avg)
                .arg(&exp_avg_sq)
                .arg(&sum)
                .arg(&z)
                .arg(&noise_std)
                .arg(&inverse_batch)
                .arg(&adam.lr)
                .arg(&adam.beta1)
                .arg(&adam.beta2)
                .arg(&adam.eps)
                .arg(&adam.weight_decay)
                .arg(&decoupled)
                .arg(&correction1)
                .arg(&root_correction2)
                .arg(&n)
                .launch(config)
                .map_err(driver("launching dp_adam_noisy_update"))?;
        }
        Ok(())
    }

    /// Update number `update` (counting from 1) of Adam on `params` and its moments from the clipped
    /// sum and drawn normals `z`: the values of `Adam::step` on `NoisyGradient::with_drawn_noise`.
    pub fn adam_noisy_update(&self, state: AdamState<'_>, step: AdamStep, update: u64) -> Result<()> {
        let len = state.params.len();
        if [state.exp_avg.len(), state.exp_avg_sq.len(), state.sum.len(), state.z.len()] != [len; 4] {
            return Err(CudaError::Mismatch("params, moments, sum and z differ in length".into()));
        }
        if len == 0 {
            return Ok(());
        }
        let s = &self.stream;
        let params = s.clone_htod(&*state.params).map_err(driver("copying the parameters"))?;
        let exp_avg = s.clone_htod(&*state.exp_avg).map_err(driver("copying the first moment"))?;
        let exp_avg_sq = s.clone_htod(&*state.exp_avg_sq).map_err(driver("copying the second moment"))?;
        let sum = s.clone_htod(state.sum).map_err(driver("copying the sum"))?;
        let z = s.clone_htod(state.z).map_err(driver("copying the normals"))?;
        let buffers = AdamBuffers {
            params: params.device_ptr(s).0,
            exp_avg: exp_avg.device_ptr(s).0,
            exp_avg_sq: exp_avg_sq.device_ptr(s).0,
            sum: sum.device_ptr(s).0,
            z: z.device_ptr(s).0,
        };
        // SAFETY: each buffer holds `len` values (checked above).
        unsafe { self.queue_adam_update(buffers, len, step, update) }?;
        s.memcpy_dtoh(&params, state.params).map_err(driver("copying the parameters back"))?;
        s.memcpy_dtoh(&exp_avg, state.exp_avg).map_err(driver("copying the first moment back"))?;
        s.memcpy_dtoh(&exp_avg_sq, state.exp_avg_sq).map_err(driver("copying the second moment back"))?;
        Ok(())
    }
}

impl Gpu {
    /// Queues `dp_ema_fold` over `len` coordinates (`len` > 0): `average = fold(average, params, decay)`.
    ///
    /// # Safety
    /// Each address holds `len` `f32` values.
    pub(crate) unsafe fn queue_ema_fold(
        &self,
        average: CUdeviceptr,
        params: CUdeviceptr,
        len: usize,
        decay: f64,
    ) -> Result<()> {
        let n = len as u64;
        let grid = u32::try_from(n.div_ceil(u64::from(THREADS))).expect("fewer than 2^40 parameters");
        let config = LaunchConfig { grid_dim: (grid, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: the arguments match dp_ema_fold's signature; the caller vouches for the lengths.
        unsafe {
            self.stream
                .launch_builder(&self.ema_fold)
                .arg(&average)
                .arg(&params)
                .arg(&decay)
                .arg(&n)
                .launch(config)
                .map_err(driver("launching dp_ema_fold"))?;
        }
        Ok(())
    }

    /// Folds `params` into `average` with `decay`: the values of `dp_runtime::trainer::ema::fold`.
    pub fn ema_fold(&self, average: &mut [f32], params: &[f32], decay: f64) -> Result<()> {
        let len = average.len();
        if params.len() != len {
            return Err(CudaError::Mismatch("the average and the parameters differ in length".into()));
        }
        if len == 0 {
            return Ok(());
        }
        let s = &self.stream;
        let on_device = s.clone_htod(&*average).map_err(driver("copying the average"))?;
        let values = s.clone_htod(params).map_err(driver("copying the parameters"))?;
        // SAFETY: both buffers hold `len` values (checked above).
        unsafe { self.queue_ema_fold(on_device.device_ptr(s).0, values.device_ptr(s).0, len, decay) }?;
        s.memcpy_dtoh(&on_device, average).map_err(driver("copying the average back"))?;
        Ok(())
    }
}
