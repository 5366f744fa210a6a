//! Modules, functions and launches. A module's PTX (from NVRTC, as on a GPU) is read for its entry
//! points, each parameter's size and alignment, and its launch bounds; the kernels themselves run
//! from the same sources compiled for the CPU (crate::kernels). The parameters are copied when a
//! launch is queued, by the sizes the PTX gives, as the driver copies them.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Arc;

use crate::kernels;

/// One kernel parameter as the PTX declares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Param {
    /// Its size in bytes.
    pub size: usize,
    /// Its alignment in bytes.
    pub align: usize,
}

/// A kernel of a loaded module.
#[derive(Debug)]
pub struct Function {
    /// Its name (the entry point).
    pub name: String,
    /// Its parameters.
    pub params: Vec<Param>,
    /// Its launch bounds (`.maxntid`), the product of their dimensions.
    pub max_threads: Option<u32>,
}

/// A loaded module: its functions by name.
#[derive(Debug)]
pub struct Module {
    /// Its functions.
    pub functions: HashMap<String, Arc<Function>>,
}

fn scalar_size(ty: &str) -> Option<usize> {
    match ty {
        ".u8" | ".s8" | ".b8" => Some(1),
        ".u16" | ".s16" | ".b16" | ".f16" | ".bf16" => Some(2),
        ".u32" | ".s32" | ".b32" | ".f32" => Some(4),
        ".u64" | ".s64" | ".b64" | ".f64" => Some(8),
        _ => None,
    }
}

fn parse_param(line: &str) -> Result<Param, String> {
    let tokens: Vec<&str> = line.trim().trim_end_matches(',').split_whitespace().collect();
    if tokens.first() != Some(&".param") {
        return Err(format!("not a parameter: {line}"));
    }
    let mut align = None;
    let mut size = None;
    let mut i = 1;
    while i < tokens.len() {
        match tokens[i] {
            ".align" => {
                align = tokens.get(i + 1).and_then(|a| a.parse().ok());
                i += 2;
                continue;
            }
            ".ptr" | ".global" | ".const" | ".local" | ".shared" => {}
            t if t.starts_with('.') => size = scalar_size(t),
            name => {
                let element = size.ok_or_else(|| format!("no type in {line}"))?;
                if let Some(open) = name.find('[') {
                    let count: usize = name[open + 1..]
                        .trim_end_matches(']')
                        .parse()
                        .map_err(|_| format!("bad array in {line}"))?;
                    return Ok(Param { size: element * count, align: align.unwrap_or(element) });
                }
                return Ok(Param { size: element, align: align.unwrap_or(element) });
            }
        }
        i += 1;
    }
    Err(format!("no name in {line}"))
}

/// The entry points of `ptx`.
pub fn parse_module(ptx: &str) -> Result<Module, String> {
    let mut functions = HashMap::new();
    let mut lines = ptx.lines();
    while let Some(line) = lines.next() {
        let Some(at) = line.find(".entry ") else { continue };
        let name = line[at + 7..].trim().trim_end_matches('(').trim().to_string();
        let mut params = Vec::new();
        if !line.trim_end().ends_with("()") {
            for line in lines.by_ref() {
                let t = line.trim();
                if t.starts_with(')') {
                    break;
                }
                if !t.is_empty() {
                    params.push(parse_param(t)?);
                }
            }
        }
        let mut max_threads = None;
        for line in lines.by_ref() {
            let t = line.trim();
            if t.starts_with('{') {
                break;
            }
            if let Some(bounds) = t.strip_prefix(".maxntid") {
                let product = bounds
                    .split(',')
                    .map(|d| d.trim().parse::<u32>().map_err(|_| format!("bad .maxntid in {name}: {t}")))
                    .try_fold(1u32, |p, d| d.map(|d| p * d))?;
                max_threads = Some(product);
            }
        }
        // The kernel compiled for the CPU must take what NVRTC's takes: the same parameter sizes.
        let Some(compiled) = kernels::param_layouts(&name) else {
            return Err(format!("kernel {name} is in the PTX but not among the emulator's compiled kernels"));
        };
        let ptx_sizes: Vec<usize> = params.iter().map(|p| p.size).collect();
        let cpu_sizes: Vec<usize> = compiled.iter().map(|p| p.size).collect();
        if ptx_sizes != cpu_sizes {
            return Err(format!(
                "kernel {name}: parameter sizes {ptx_sizes:?} in the PTX, {cpu_sizes:?} compiled for the CPU"
            ));
        }
        functions.insert(name.clone(), Arc::new(Function { name, params, max_threads }));
    }
    Ok(Module { functions })
}

/// A queued launch: the function, its geometry and a copy of its parameters.
pub struct Launch {
    function: Arc<Function>,
    grid: [u32; 3],
    block: [u32; 3],
    shared: u32,
    /// The parameters' bytes, 16-byte aligned storage.
    bytes: Vec<u128>,
    offsets: Vec<usize>,
}

impl Launch {
    /// Checks the geometry and copies the parameters `params` points at.
    ///
    /// # Safety
    /// `params` must point at one pointer per parameter of `function`, each to a value of the
    /// parameter's size, as `cuLaunchKernel` requires.
    pub unsafe fn new(
        function: Arc<Function>,
        grid: [u32; 3],
        block: [u32; 3],
        shared: u32,
        params: *mut *mut c_void,
    ) -> Result<Self, (u32, String)> {
        use crate::api::{CUDA_ERROR_INVALID_VALUE, CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES};
        let threads = block.iter().map(|&d| d as u64).product::<u64>();
        if grid.contains(&0) || block.contains(&0) {
            return Err((
                CUDA_ERROR_INVALID_VALUE,
                format!("{}: a dimension is 0 ({grid:?}, {block:?})", function.name),
            ));
        }
        if threads > 1024
            || block[2] > 64
            || grid[1] > 65_535
            || grid[2] > 65_535
            || grid[0] > i32::MAX as u32
        {
            return Err((
                CUDA_ERROR_INVALID_VALUE,
                format!("{}: grid {grid:?} block {block:?} out of range", function.name),
            ));
        }
        if let Some(bound) = function.max_threads {
            if threads > bound as u64 {
                return Err((
                    CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES,
                    format!(
                        "{}: {threads} threads per block over its launch bounds of {bound}",
                        function.name
                    ),
                ));
            }
        }
        if shared > 48 * 1024 {
            return Err((
                CUDA_ERROR_INVALID_VALUE,
                format!("{}: {shared} bytes of shared memory", function.name),
            ));
        }
        if params.is_null() && !function.params.is_empty() {
            return Err((CUDA_ERROR_INVALID_VALUE, format!("{}: no parameters given", function.name)));
        }
        let mut offsets = Vec::with_capacity(function.params.len());
        let mut end = 0usize;
        for p in &function.params {
            let at = end.div_ceil(p.align.clamp(1, 16)) * p.align.clamp(1, 16);
            offsets.push(at);
            end = at + p.size;
        }
        let mut bytes = vec![0u128; end.div_ceil(16).max(1)];
        let base = bytes.as_mut_ptr() as *mut u8;
        for (i, (p, &at)) in function.params.iter().zip(&offsets).enumerate() {
            // SAFETY: the caller's contract: params[i] points at p.size readable bytes; the copy
            // lands inside `bytes`, sized to hold every parameter at its offset.
            unsafe { std::ptr::copy_nonoverlapping(*params.add(i) as *const u8, base.add(at), p.size) };
        }
        Ok(Launch { function, grid, block, shared, bytes, offsets })
    }

    /// Runs the kernel on the CPU.
    pub fn run(&self) -> Result<(), String> {
        let base = self.bytes.as_ptr() as *mut u8;
        // SAFETY: every offset is inside `bytes`, which lives as long as this call.
        let mut pointers: Vec<*mut c_void> =
            self.offsets.iter().map(|&at| unsafe { base.add(at) } as *mut c_void).collect();
        // SAFETY: one pointer per parameter, each to a copy of the value the launch was given.
        unsafe {
            kernels::launch(&self.function.name, self.grid, self.block, self.shared, pointers.as_mut_ptr())
        }
        .map_err(|e| format!("kernel {}: {e}", self.function.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_and_launch_bounds_are_read_from_the_ptx() {
        assert_eq!(parse_param(".param .u64 f_param_0,").unwrap(), Param { size: 8, align: 8 });
        assert_eq!(parse_param(".param .f32 f_param_1").unwrap(), Param { size: 4, align: 4 });
        assert_eq!(parse_param(".param .align 8 .b8 f_param_2[80],").unwrap(), Param { size: 80, align: 8 });
        assert_eq!(parse_param(".param .u64 .ptr .align 1 f_param_3,").unwrap(), Param { size: 8, align: 1 });
        assert!(parse_param(".reg .u64 x").is_err());
    }
}
