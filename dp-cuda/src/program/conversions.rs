//! Values converted between f32 and bf16 on the GPU (`kernels/storage.cu`), for a device program storing
//! in bf16 (docs/GPU.md, "bf16 storage"): a product's operands into their slots of the type it
//! multiplies (`products.rs`), and a copy between spans stored in different types.

use cudarc::driver::sys::CUdeviceptr;
use cudarc::driver::PushKernelArg;
use dp_runtime::device::{DeviceError, Span};

use super::memory::ValueType;
use super::{backend, elementwise, GpuOps};

type Outcome = std::result::Result<(), DeviceError>;

/// Queues `dst[i] = src[i]` for `i < len`, each a tagged address (`dp_values`) of its type: f32 to
/// bf16 rounds as the host reference's store rounds, bf16 to f32 is exact.
pub(super) fn convert_values(ops: &GpuOps<'_>, src: CUdeviceptr, dst: CUdeviceptr, len: usize) -> Outcome {
    let n = len as u64;
    let mut builder = ops.gpu.stream.launch_builder(&ops.gpu.convert);
    builder.arg(&src).arg(&dst).arg(&n);
    // SAFETY: dp_convert(dp_values src, dp_values dst, dp_u64 len) of kernels/storage.cu; the callers
    // pass addresses checked to hold `len` values of their types.
    unsafe { builder.launch(elementwise(len)) }.map(|_| ()).map_err(|e| backend("dp_convert")(e.to_string()))
}

/// Queues the conversion of `s` from its slot of type `from` into its slot of type `to`.
pub(super) fn convert(ops: &GpuOps<'_>, s: Span, from: ValueType, to: ValueType) -> Outcome {
    let addresses = ops.memory.addresses();
    convert_values(ops, addresses.tagged(s, from)?, addresses.tagged(s, to)?, s.len)
}
