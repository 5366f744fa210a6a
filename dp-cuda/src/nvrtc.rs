//! Run-time compilation of the kernels through NVRTC, loaded dynamically: NVRTC is a compiler
//! library and needs no GPU, so every kernel's compilation is tested on machines without one.

use cudarc::nvrtc::{compile_ptx_with_opts, CompileError, CompileOptions};

use crate::error::{CudaError, Result};

/// How to get NVRTC when it is missing.
const NVRTC_HINT: &str = "install the CUDA toolkit, or `pip install nvidia-cuda-nvrtc-cu12` and add its \
     `nvidia/cuda_nvrtc/lib` folder to LD_LIBRARY_PATH";

/// Whether NVRTC (`libnvrtc.so.12` or another name the loader tries) can be loaded.
pub fn available() -> bool {
    // SAFETY: only tries to open the library by its candidate names; no symbol is called.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// NVRTC's version, or the error that names the missing library.
pub fn version() -> Result<(i32, i32)> {
    require()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is loaded (checked above); nvrtcVersion writes two ints.
    unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) }.result().map_err(|e| {
        CudaError::Compile { source_name: "nvrtcVersion".into(), arch: String::new(), log: e.to_string() }
    })?;
    Ok((major, minor))
}

fn require() -> Result<()> {
    if available() {
        Ok(())
    } else {
        Err(CudaError::LibraryMissing { library: "libnvrtc.so.12", hint: NVRTC_HINT })
    }
}

/// The options [`compile`] passes, as the kernel cache records them with each entry (an entry
/// compiled with other options is a miss).
pub const OPTIONS: &str = "prec-div=true prec-sqrt=true fmad=false use-fast-math=false ftz=false";

/// PTX of `source` (the file `name`) for `arch` (`sm_80`, `sm_90`, ...), with IEEE division and
/// square roots and no fast math: the noise must be the CPU's value for value.
pub fn compile(name: &str, source: &str, arch: &'static str) -> Result<String> {
    require()?;
    let options = CompileOptions {
        arch: Some(arch),
        name: Some(name.to_string()),
        prec_div: Some(true),
        prec_sqrt: Some(true),
        fmad: Some(false),
        use_fast_math: Some(false),
        ftz: Some(false),
        ..Default::default()
    };
    match compile_ptx_with_opts(source, options) {
        Ok(ptx) => Ok(ptx.to_src()),
        Err(error) => {
            let log = match &error {
                CompileError::CompileError { log, .. } => log.to_string_lossy().into_owned(),
                other => other.to_string(),
            };
            Err(CudaError::Compile { source_name: name.to_string(), arch: arch.to_string(), log })
        }
    }
}
