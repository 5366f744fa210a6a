//! Values converted between f32 and bf16 on the GPU (`kernels/storage.cu`), for a device program storing
//! in bf16 (docs/GPU.md, "bf16 storage"): a product's operands into their slots of the type it
//! multiplies (`products.rs`), and a copy between spans stored in different types.

use cudarc::driver::sys::CUdeviceptr;
use cudarc::driver::PushKernelArg;
use dp_runtime::device::{DeviceError, Span};

use super::memory::{Operand, ValueType, BF16_TAG};
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

/// Queues the conversion of `s`, `operand` of a product, from its slot of type `from` into its slot
/// of type `to` (a span stored in bf16 goes to f32 in the operand's conversion slot,
/// `Addresses::operand_address`).
pub(super) fn convert(
    ops: &GpuOps<'_>,
    s: Span,
    from: ValueType,
    to: ValueType,
    operand: Operand,
) -> Outcome {
    let addresses = ops.memory.addresses();
    let tag = |address: CUdeviceptr, ty: ValueType| match ty {
        ValueType::F32 => address,
        ValueType::Bf16 => address | BF16_TAG,
    };
    let src = tag(addresses.operand_address(s, from, operand)?, from);
    let dst = tag(addresses.operand_address(s, to, operand)?, to);
    convert_values(ops, src, dst, s.len)
}

/// The weights a pass has rounded into their bf16 slots (`GpuOps::rounding_each_weight_once`).
#[derive(Debug, Default)]
pub struct RoundedWeights(Vec<Span>);

impl RoundedWeights {
    /// Whether `s` is to be rounded now: not when a span rounded before holds it; otherwise it is
    /// recorded as rounded.
    pub fn first_time(&mut self, s: Span) -> bool {
        let holds =
            |r: &Span| r.region == s.region && r.offset <= s.offset && s.offset + s.len <= r.offset + r.len;
        if self.0.iter().any(holds) {
            return false;
        }
        self.0.push(s);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dp_runtime::device::Region;

    #[test]
    fn a_weight_is_rounded_the_first_time_a_pass_reads_it_only() {
        let mut rounded = RoundedWeights::default();
        let weight = Span::new(Region::Params, 100, 50);
        assert!(rounded.first_time(weight));
        assert!(!rounded.first_time(weight), "the same weight again");
        assert!(!rounded.first_time(Span::new(Region::Params, 110, 20)), "a part of it");
        assert!(rounded.first_time(Span::new(Region::Params, 140, 20)), "a span reaching past it");
        assert!(rounded.first_time(Span::new(Region::Params, 0, 10)), "another weight");
        assert!(!rounded.first_time(Span::new(Region::Params, 145, 15)), "held by the span past it");
        assert!(rounded.first_time(Span::new(Region::Inputs, 100, 50)), "the same offsets elsewhere");
    }
}
