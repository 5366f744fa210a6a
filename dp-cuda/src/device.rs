//! One GPU through the CUDA driver (loaded dynamically): its context and stream, cuBLAS on that
//! stream, and the kernels of this crate compiled by NVRTC for its architecture and loaded once. The
//! methods that copy their inputs in and the result out are the entry points of the GPU tests, which
//! compare each kernel file with the CPU; a training step keeps everything on the device
//! ([`crate::trainer::GpuModel`]).

use std::sync::Arc;

use cudarc::driver::sys::{CUdevice_attribute, CUdeviceptr};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DriverError, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::Ptx;
use dp_runtime::clipping::ClipMode;
use dp_runtime::noise::gaussian::ziggurat_tables;

use crate::error::{CudaError, Result};
use crate::noise::{key_words, NoiseLaunch, THREADS};
use crate::{
    attention, clip, conv, dense, lstm, noise, norm, sequence, source, storage, transformer, update, views,
};
use cudarc::cublas::CudaBlas;

/// How to get the driver when it is missing.
pub const DRIVER_HINT: &str = "install the NVIDIA driver (the CUDA toolkit is not needed)";

/// How to get cuBLAS when it is missing.
pub const CUBLAS_HINT: &str = "install the CUDA toolkit, or `pip install nvidia-cublas-cu12` and add its \
`nvidia/cublas/lib` folder to LD_LIBRARY_PATH";

/// A GPU with this crate's kernels loaded.
pub struct Gpu {
    pub(crate) stream: Arc<CudaStream>,
    /// cuBLAS on the same stream: the products of device programs.
    pub(crate) blas: CudaBlas,
    /// `kernels/dense.cu`, in the order of [`dense::ENTRIES`].
    pub(crate) dense: Vec<CudaFunction>,
    /// `kernels/conv.cu`, in the order of [`conv::ENTRIES`].
    pub(crate) conv: Vec<CudaFunction>,
    /// `kernels/norm.cu`, in the order of [`norm::ENTRIES`].
    pub(crate) norm: Vec<CudaFunction>,
    /// `kernels/sequence.cu`, in the order of [`sequence::ENTRIES`].
    pub(crate) sequence: Vec<CudaFunction>,
    /// `kernels/lstm.cu`, in the order of [`lstm::ENTRIES`].
    pub(crate) lstm: Vec<CudaFunction>,
    /// `kernels/attention.cu`, in the order of [`attention::ENTRIES`].
    pub(crate) attention: Vec<CudaFunction>,
    /// `kernels/transformer.cu`, in the order of [`transformer::ENTRIES`].
    pub(crate) transformer: Vec<CudaFunction>,
    name: String,
    arch: &'static str,
    /// The compute capability, (major, minor).
    capability: (i32, i32),
    pub(crate) noise_first: CudaFunction,
    pub(crate) noise_retry: CudaFunction,
    pub(crate) clip_factors: CudaFunction,
    pub(crate) sgd_update: CudaFunction,
    pub(crate) adam_update: CudaFunction,
    pub(crate) ema_fold: CudaFunction,
    /// `kernels/views.cu`, in the order of [`views::ENTRIES`].
    pub(crate) views: Vec<CudaFunction>,
    /// `kernels/storage.cu`'s conversion between a span's f32 and bf16 slots.
    pub(crate) convert: CudaFunction,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu").field("name", &self.name).field("arch", &self.arch).finish()
    }
}

pub(crate) fn driver(during: &'static str) -> impl FnOnce(DriverError) -> CudaError {
    move |e| CudaError::Driver { during, message: e.to_string() }
}

/// Whether the CUDA driver library (`libcuda.so.1`) can be loaded.
pub fn driver_available() -> bool {
    // SAFETY: only tries to open the library by its candidate names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// The number of CUDA devices, 0 when the driver library is missing.
pub fn device_count() -> usize {
    if !driver_available() {
        return 0;
    }
    CudaContext::device_count().map_or(0, |n| n.max(0) as usize)
}

impl Gpu {
    /// Opens device `ordinal`, compiles every kernel for its architecture and loads them.
    pub fn open(ordinal: usize) -> Result<Self> {
        if !driver_available() {
            return Err(CudaError::LibraryMissing { library: "libcuda.so.1", hint: DRIVER_HINT });
        }
        let count = device_count();
        if ordinal >= count {
            return Err(CudaError::Mismatch(format!(
                "cuda:{ordinal} requested, {count} CUDA devices present"
            )));
        }
        let ctx = CudaContext::new(ordinal).map_err(driver("opening the device"))?;
        // SAFETY: every allocation of this crate is used on the one stream below, in order, but for
        // a step's key, noise tables and noise buffers, which a branch of it (crate::branch) reads
        // and writes between a fork and a join that order them explicitly, and the landing words
        // (crate::landing), allocated on a stream of their own and ordered with this one by the
        // landing's two events (written there, read here). So the events cudarc
        // would record per allocation are not needed, and a step captured into a CUDA graph
        // (crate::graphs) cannot wait on events recorded outside its capture.
        unsafe { ctx.disable_event_tracking() };
        let major = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
            .map_err(driver("reading the compute capability"))?;
        let minor = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)
            .map_err(driver("reading the compute capability"))?;
        // NVRTC takes a 'static architecture name; one string per process and device kind.
        let arch: &'static str = Box::leak(format!("sm_{major}{minor}").into_boxed_str());
        let name = ctx.name().map_err(driver("reading the device name"))?;
        let cache = crate::cache::folder();
        let load = |file: &str, text: &str, entries: &[&str]| -> Result<Vec<CudaFunction>> {
            let (ptx, _) = crate::cache::compile(cache.as_deref(), file, &source(text), arch)?;
            let module = ctx.load_module(Ptx::from_src(ptx)).map_err(driver("loading a module"))?;
            entries.iter().map(|e| module.load_function(e).map_err(driver("finding a kernel"))).collect()
        };
        let mut noise = load("noise.cu", noise::SOURCE, &["dp_noise_first", "dp_noise_retry"])?.into_iter();
        let mut clip = load("clip.cu", clip::SOURCE, &["dp_clip_factors"])?.into_iter();
        let mut update = load("update.cu", update::SOURCE, update::ENTRIES)?.into_iter();
        let (
            Some(noise_first),
            Some(noise_retry),
            Some(clip_factors),
            Some(sgd_update),
            Some(adam_update),
            Some(ema_fold),
        ) = (noise.next(), noise.next(), clip.next(), update.next(), update.next(), update.next())
        else {
            unreachable!("each load returns one function per entry");
        };
        let dense = load("dense.cu", dense::SOURCE, dense::ENTRIES)?;
        let conv = load("conv.cu", conv::SOURCE, conv::ENTRIES)?;
        let norm = load("norm.cu", norm::SOURCE, norm::ENTRIES)?;
        let attention = load("attention.cu", attention::SOURCE, attention::ENTRIES)?;
        let sequence = load("sequence.cu", sequence::SOURCE, sequence::ENTRIES)?;
        let lstm = load("lstm.cu", lstm::SOURCE, lstm::ENTRIES)?;
        let transformer = load("transformer.cu", transformer::SOURCE, transformer::ENTRIES)?;
        let views = load("views.cu", views::SOURCE, views::ENTRIES)?;
        let Some(convert) = load("storage.cu", storage::SOURCE, storage::ENTRIES)?.into_iter().next() else {
            unreachable!("each load returns one function per entry");
        };
        // SAFETY: only tries to open the library by its candidate names.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err(CudaError::LibraryMissing { library: "libcublas.so.12", hint: CUBLAS_HINT });
        }
        // A stream of its own: the legacy default stream cannot be captured into a graph.
        let stream = ctx.new_stream().map_err(driver("creating a stream"))?;
        let blas = CudaBlas::new(stream.clone()).map_err(|e| CudaError::Driver {
            during: "creating the cuBLAS handle",
            message: e.to_string(),
        })?;
        Ok(Gpu {
            stream,
            blas,
            dense,
            conv,
            attention,
            norm,
            sequence,
            lstm,
            transformer,
            name,
            arch,
            capability: (major, minor),
            noise_first,
            noise_retry,
            clip_factors,
            sgd_update,
            adam_update,
            ema_fold,
            views,
            convert,
        })
    }

    /// Whether the device multiplies bf16 on tensor cores (compute capability 8.0, Ampere, or newer),
    /// which `--precision bf16` needs.
    pub fn has_bf16_tensor_cores(&self) -> bool {
        self.capability.0 >= 8
    }

    /// The device's name and architecture, e.g. `NVIDIA H200 (sm_90)`.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.name, self.arch)
    }

    /// The device memory free now, and in all, in bytes.
    pub fn memory(&self) -> Result<(u64, u64)> {
        let (free, total) =
            self.stream.context().mem_get_info().map_err(driver("reading the free memory"))?;
        Ok((free as u64, total as u64))
    }

    /// `len` standard normals under `key`: the values of the CPU's chunked draw.
    pub fn standard_normals(&self, key: &[u8; 32], len: usize) -> Result<Vec<f64>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let tables = NoiseTables::upload(self)?;
        let s = &self.stream;
        let key = s.clone_htod(&key_words(key)).map_err(driver("copying the key"))?;
        let mut out = s.alloc_zeros::<f64>(len).map_err(driver("allocating the noise"))?;
        let mut words = s.alloc_zeros::<u64>(len).map_err(driver("allocating the first words"))?;
        self.draw_normals(s, &key, &tables, &mut out, &mut words, len)?;
        s.clone_dtoh(&out).map_err(driver("copying the noise back"))
    }

    /// Queues on `s` (the GPU's stream, or a branch of it: `crate::branch`) the draw of `len`
    /// standard normals under the key words `key` (8, on the device) into `out`: the two passes of
    /// `noise.cu`, `first_words` (`len`) their scratch.
    pub(crate) fn draw_normals(
        &self,
        s: &CudaStream,
        key: &CudaSlice<u32>,
        tables: &NoiseTables,
        out: &mut CudaSlice<f64>,
        first_words: &mut CudaSlice<u64>,
        len: usize,
    ) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let launch = NoiseLaunch::for_len(len);
        let n = len as u64;
        let config = |shape: noise::LaunchShape| LaunchConfig {
            grid_dim: (shape.grid, 1, 1),
            block_dim: (shape.block, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the argument list matches dp_noise_first's and dp_noise_retry's signatures; every
        // buffer is as long as the kernels read (the key 8 words, the tables 257/256/257, `out` len).
        unsafe {
            s.launch_builder(&self.noise_first)
                .arg(key)
                .arg(&n)
                .arg(&tables.edge)
                .arg(&tables.ratio)
                .arg(&mut *out)
                .arg(&mut *first_words)
                .launch(config(launch.first))
                .map_err(driver("launching dp_noise_first"))?;
            s.launch_builder(&self.noise_retry)
                .arg(key)
                .arg(&n)
                .arg(&tables.edge)
                .arg(&tables.ratio)
                .arg(&tables.density)
                .arg(&*first_words)
                .arg(&mut *out)
                .launch(config(launch.retry))
                .map_err(driver("launching dp_noise_retry"))?;
        }
        Ok(())
    }

    /// Clip factors of a batch (`sq_norms.len() / groups` examples) and the count of examples with an
    /// invalid norm: the values of [`dp_runtime::clipping::clip_factors`].
    pub fn clip_factors(
        &self,
        mode: ClipMode,
        clip_norm: f64,
        groups: usize,
        sq_norms: &[f32],
    ) -> Result<(Vec<f32>, usize)> {
        if groups == 0 || !sq_norms.len().is_multiple_of(groups) {
            return Err(CudaError::Mismatch(format!("{} norms for {groups} groups", sq_norms.len())));
        }
        let batch = (sq_norms.len() / groups) as u64;
        if batch == 0 {
            return Ok((Vec::new(), 0));
        }
        let s = &self.stream;
        let norms = s.clone_htod(sq_norms).map_err(driver("copying the norms"))?;
        let mut factors = s.alloc_zeros::<f32>(sq_norms.len()).map_err(driver("allocating the factors"))?;
        let mut bad = s.alloc_zeros::<u32>(1).map_err(driver("allocating the count"))?;
        let per_layer = i32::from(matches!(mode, ClipMode::PerLayer));
        let groups = groups as u64;
        let grid = u32::try_from(batch.div_ceil(u64::from(THREADS))).expect("a batch below 2^40");
        let config = LaunchConfig { grid_dim: (grid, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: the arguments match dp_clip_factors; the buffers hold batch·groups norms and factors.
        unsafe {
            s.launch_builder(&self.clip_factors)
                .arg(&per_layer)
                .arg(&clip_norm)
                .arg(&groups)
                .arg(&batch)
                .arg(&norms)
                .arg(&mut factors)
                .arg(&mut bad)
                .launch(config)
                .map_err(driver("launching dp_clip_factors"))?;
        }
        let factors = s.clone_dtoh(&factors).map_err(driver("copying the factors back"))?;
        let bad = s.clone_dtoh(&bad).map_err(driver("copying the count back"))?;
        Ok((factors, bad[0] as usize))
    }

    /// Queues `dp_sgd_noisy_update` over `len` coordinates of `buffers` (`len` > 0).
    ///
    /// # Safety
    /// Each address holds `len` values: `f32` for the parameters, velocity and sum, `f64` for `z`.
    pub(crate) unsafe fn queue_sgd_update(
        &self,
        buffers: SgdBuffers,
        len: usize,
        step: SgdStep,
    ) -> Result<()> {
        let (first, nesterov) = (i32::from(step.first), i32::from(step.nesterov));
        let n = len as u64;
        let grid = u32::try_from(n.div_ceil(u64::from(THREADS))).expect("fewer than 2^40 parameters");
        let config = LaunchConfig { grid_dim: (grid, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 };
        let SgdBuffers { params, velocity, sum, z } = buffers;
        // SAFETY: the arguments match dp_sgd_noisy_update's signature; the caller vouches for the
        // buffers' lengths.
        unsafe {
            self.stream
                .launch_builder(&self.sgd_update)
                .arg(&params)
                .arg(&velocity)
                .arg(&sum)
                .arg(&z)
                .arg(&step.noise_std)
                .arg(&step.inverse_batch)
                .arg(&step.lr)
                .arg(&step.momentum)
                .arg(&step.weight_decay)
                .arg(&first)
                .arg(&nesterov)
                .arg(&n)
                .launch(config)
                .map_err(driver("launching dp_sgd_noisy_update"))?;
        }
        Ok(())
    }

    /// One noisy SGD update of `params` and `velocity` from the clipped sum and drawn normals `z`:
    /// the values of `Sgd::step` on `NoisyGradient::with_drawn_noise`.
    pub fn sgd_noisy_update(&self, state: SgdState<'_>, step: SgdStep) -> Result<()> {
        let len = state.params.len();
        if [state.velocity.len(), state.sum.len(), state.z.len()] != [len; 3] {
            return Err(CudaError::Mismatch("params, velocity, sum and z differ in length".into()));
        }
        if len == 0 {
            return Ok(());
        }
        let s = &self.stream;
        let params = s.clone_htod(&*state.params).map_err(driver("copying the parameters"))?;
        let velocity = s.clone_htod(&*state.velocity).map_err(driver("copying the velocity"))?;
        let sum = s.clone_htod(state.sum).map_err(driver("copying the sum"))?;
        let z = s.clone_htod(state.z).map_err(driver("copying the normals"))?;
        let buffers = SgdBuffers {
            params: params.device_ptr(s).0,
            velocity: velocity.device_ptr(s).0,
            sum: sum.device_ptr(s).0,
            z: z.device_ptr(s).0,
        };
        // SAFETY: each buffer holds `len` values (checked above).
        unsafe { self.queue_sgd_update(buffers, len, step) }?;
        s.memcpy_dtoh(&params, state.params).map_err(driver("copying the parameters back"))?;
        s.memcpy_dtoh(&velocity, state.velocity).map_err(driver("copying the velocity back"))?;
        Ok(())
    }
}

/// The ziggurat's tables on the device (the CPU's, so that both sides compare the same bits).
pub(crate) struct NoiseTables {
    edge: CudaSlice<f64>,
    ratio: CudaSlice<f64>,
    density: CudaSlice<f64>,
}

impl NoiseTables {
    pub(crate) fn upload(gpu: &Gpu) -> Result<Self> {
        let tables = ziggurat_tables();
        let s = &gpu.stream;
        Ok(NoiseTables {
            edge: s.clone_htod(&tables.edge[..]).map_err(driver("copying the tables"))?,
            ratio: s.clone_htod(&tables.ratio[..]).map_err(driver("copying the tables"))?,
            density: s.clone_htod(&tables.density[..]).map_err(driver("copying the tables"))?,
        })
    }
}

/// The device addresses of one SGD update's buffers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SgdBuffers {
    pub params: CUdeviceptr,
    pub velocity: CUdeviceptr,
    pub sum: CUdeviceptr,
    pub z: CUdeviceptr,
}

/// The buffers of one SGD update.
#[derive(Debug)]
pub struct SgdState<'a> {
    /// The parameters, updated in place.
    pub params: &'a mut [f32],
    /// The momentum buffer, updated in place (unused without momentum).
    pub velocity: &'a mut [f32],
    /// The clipped sum.
    pub sum: &'a [f32],
    /// One standard normal per coordinate.
    pub z: &'a [f64],
}

/// The scalars of one SGD update.
#[derive(Debug, Clone, Copy)]
pub struct SgdStep {
    /// σ·C.
    pub noise_std: f64,
    /// 1 / expected batch size.
    pub inverse_batch: f64,
    /// The learning rate of this step.
    pub lr: f64,
    /// Momentum (0: plain SGD).
    pub momentum: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// The first update with momentum (the buffer starts at the gradient).
    pub first: bool,
    /// Nesterov momentum.
    pub nesterov: bool,
}
