//! Every product of the host reference, written from the contracts of `DeviceOps::gemm`,
//! `gemm_batched` and `gemm_batched_rows`: one loop over a strided batch of products whose operands may
//! be stored inside wider rows (an attention head's columns of the `[T, 3d]` projection), summed in
//! f64, operands rounded to bf16 where the precision and the product's mark say.

use super::HostDevice;
use crate::device::{BatchedGemm, DeviceError, Gemm, LeadingDims, Operands, Precision};
use dp_kernels::gemm_bf16::round_to_bf16;

/// The row lengths of operands stored at their widths.
pub(super) fn widths(g: &Gemm) -> LeadingDims {
    LeadingDims {
        a: if g.a_transposed { g.m } else { g.k },
        b: if g.b_transposed { g.k } else { g.n },
        c: g.n,
    }
}

impl HostDevice {
    pub(super) fn gemm_rows(&mut self, bg: BatchedGemm, ld: LeadingDims) -> Result<(), DeviceError> {
        ld.check(&bg)?;
        let g = bg.gemm;
        let (mut a, mut b) = (self.read(g.a)?, self.read(g.b)?);
        match (self.precision, g.operands) {
            (Precision::Bf16, Operands::OfPrecision) => {
                for v in a.iter_mut().chain(b.iter_mut()) {
                    *v = round_to_bf16(*v);
                }
            }
            (Precision::F32, _) | (Precision::Bf16, Operands::F32) => {}
        }
        let c = self.write(g.c)?;
        for e in 0..bg.batch {
            let (a0, b0, c0) = (e * bg.stride_a, e * bg.stride_b, e * bg.stride_c);
            for i in 0..g.m {
                for j in 0..g.n {
                    let mut sum = 0.0f64;
                    for p in 0..g.k {
                        let av = if g.a_transposed { a[a0 + p * ld.a + i] } else { a[a0 + i * ld.a + p] };
                        let bv = if g.b_transposed { b[b0 + j * ld.b + p] } else { b[b0 + p * ld.b + j] };
                        sum += f64::from(av) * f64::from(bv);
                    }
                    let cell = &mut c[c0 + i * ld.c + j];
                    *cell = if g.accumulate { *cell + sum as f32 } else { sum as f32 };
                }
            }
        }
        Ok(())
    }
}
