//! The regions of a device program on a GPU, and where each span's values live: one f32 allocation
//! per region, and, while storing in bf16 (docs/GPU.md, "bf16 storage"), a bf16 store of the arena and
//! of the regions a product may need in bf16, at the same offsets.
//!
//! While storing in bf16, an arena span marked [`Stored::OfPrecision`] lives in the bf16 store and
//! every other span in its f32 region, as the host reference keeps them
//! (`HostDevice::set_bf16_storage`). A kernel that takes a buffer of either type gets its address
//! tagged with its type ([`RegionMemory::values`], bit 0 set for bf16: `dp_values` in
//! `kernels/common.cuh`); a kernel that reads only f32 gets [`RegionMemory::ptr`], which refuses a
//! span stored in bf16, so a launch that forgot the type is an error, never a misread. A span's slot
//! in the store of the other type is a product's place to convert it (`program/products.rs`): the
//! compiler gives every arena buffer offsets of its own (`Planner::alloc` reuses none), so that slot
//! holds no other buffer's values.

use cudarc::driver::sys::CUdeviceptr;
use cudarc::driver::{CudaSlice, DevicePtr};
use dp_runtime::device::{DeviceError, Region, Span, Stored};

use crate::device::{driver, Gpu};
use crate::error::Result;

/// The regions of [`Region`], one allocation each (`Tokens` holds `u32` ids in an allocation of
/// 32-bit values, copied in bit for bit), and their bf16 stores while storing in bf16.
pub struct RegionMemory {
    slices: [CudaSlice<f32>; REGIONS],
    /// The bf16 stores of [`BF16_STORED`], while storing in bf16.
    bf16: Option<Vec<CudaSlice<u16>>>,
    addresses: Addresses,
}

const REGIONS: usize = 9;

const ALL: [Region; REGIONS] = [
    Region::Params,
    Region::Grad,
    Region::Arena,
    Region::Inputs,
    Region::Labels,
    Region::Losses,
    Region::SqNorms,
    Region::Factors,
    Region::Tokens,
];

/// The regions with a bf16 store while storing in bf16: the arena, whose `OfPrecision` buffers live
/// there, and the parameters and the batch, which a product in bf16 reads converted.
pub const BF16_STORED: [Region; 3] = [Region::Arena, Region::Params, Region::Inputs];

/// The bytes [`RegionMemory::new`] allocates for regions of `lens` values, and with `bf16` the bf16
/// stores [`RegionMemory::store_bf16`] adds (each region one value at least, as allocated).
pub fn region_bytes(lens: impl Fn(Region) -> usize, bf16: bool) -> u64 {
    let f32s: u64 = ALL.iter().map(|&r| lens(r).max(1) as u64 * 4).sum();
    let bf16s: u64 = if bf16 { BF16_STORED.iter().map(|&r| lens(r).max(1) as u64 * 2).sum() } else { 0 };
    f32s + bf16s
}

/// A region's slot in [`RegionMemory`].
fn slot(region: Region) -> usize {
    match region {
        Region::Params => 0,
        Region::Grad => 1,
        Region::Arena => 2,
        Region::Inputs => 3,
        Region::Labels => 4,
        Region::Losses => 5,
        Region::SqNorms => 6,
        Region::Factors => 7,
        Region::Tokens => 8,
    }
}

/// The type a span's values are held in on the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    F32,
    Bf16,
}

impl ValueType {
    /// Bytes per value.
    pub fn size(self) -> usize {
        match self {
            ValueType::F32 => 4,
            ValueType::Bf16 => 2,
        }
    }

    /// The other type: what a span converted into this type is stored in.
    pub fn other(self) -> Self {
        match self {
            ValueType::F32 => ValueType::Bf16,
            ValueType::Bf16 => ValueType::F32,
        }
    }
}

/// The tag of a bf16 buffer's address in `dp_values` (kernels/common.cuh).
pub const BF16_TAG: CUdeviceptr = 1;

/// The base addresses and lengths of the regions and of their bf16 stores, and the address
/// arithmetic on them (apart from the allocations, so that it is tested without a GPU).
#[derive(Debug, Clone)]
pub struct Addresses {
    f32: [CUdeviceptr; REGIONS],
    lens: [usize; REGIONS],
    /// The bf16 store's base per region, while storing in bf16 (the regions of [`BF16_STORED`]).
    bf16: [Option<CUdeviceptr>; REGIONS],
}

impl Addresses {
    /// Each region at the f32 base and with the number of values `region` gives, no bf16 store.
    pub fn new(region: impl Fn(Region) -> (CUdeviceptr, usize)) -> Self {
        let mut addresses = Addresses { f32: [0; REGIONS], lens: [0; REGIONS], bf16: [None; REGIONS] };
        for r in ALL {
            (addresses.f32[slot(r)], addresses.lens[slot(r)]) = region(r);
        }
        addresses
    }

    /// Stores the regions of [`BF16_STORED`] in bf16 at `bases` (in that order), or nothing in bf16.
    pub fn store_bf16(&mut self, bases: Option<[CUdeviceptr; BF16_STORED.len()]>) {
        self.bf16 = [None; REGIONS];
        if let Some(bases) = bases {
            for (region, base) in BF16_STORED.into_iter().zip(bases) {
                self.bf16[slot(region)] = Some(base);
            }
        }
    }

    /// Whether `OfPrecision` spans are stored in bf16.
    pub fn storing_bf16(&self) -> bool {
        self.bf16[slot(Region::Arena)].is_some()
    }

    /// The type `s` is stored in, after checking that only arena spans are marked `OfPrecision` and
    /// that `s` lies inside its region.
    pub fn stored_type(&self, s: Span) -> std::result::Result<ValueType, DeviceError> {
        let len = self.lens[slot(s.region)];
        if s.offset + s.len > len {
            return Err(DeviceError::Mismatch(format!("{s:?} outside a region of {len}")));
        }
        match (s.stored, s.region) {
            (Stored::F32, _) => Ok(ValueType::F32),
            (Stored::OfPrecision, Region::Arena) => {
                Ok(if self.storing_bf16() { ValueType::Bf16 } else { ValueType::F32 })
            }
            (Stored::OfPrecision, region) => Err(DeviceError::Mismatch(format!(
                "{s:?}: only arena buffers are stored in the device's precision, not {region:?}"
            ))),
        }
    }

    /// The address of `s`'s slot in the store of type `ty`: where it lives if that is its stored
    /// type, where a product converts it otherwise.
    pub fn address(&self, s: Span, ty: ValueType) -> std::result::Result<CUdeviceptr, DeviceError> {
        self.stored_type(s)?;
        let base = match ty {
            ValueType::F32 => self.f32[slot(s.region)],
            ValueType::Bf16 => self.bf16[slot(s.region)].ok_or_else(|| {
                DeviceError::Mismatch(format!("{s:?} in bf16: {:?} has no bf16 store", s.region))
            })?,
        };
        Ok(base + (s.offset * ty.size()) as CUdeviceptr)
    }

    /// The address of `s` in its slot of type `ty`, tagged for `dp_values`.
    pub fn tagged(&self, s: Span, ty: ValueType) -> std::result::Result<CUdeviceptr, DeviceError> {
        let address = self.address(s, ty)?;
        Ok(match ty {
            ValueType::F32 => address,
            ValueType::Bf16 => address | BF16_TAG,
        })
    }

    /// The f32 address of `s`, for a kernel that reads f32 only: an error if `s` is stored in bf16.
    pub fn ptr(&self, s: Span) -> std::result::Result<CUdeviceptr, DeviceError> {
        match self.stored_type(s)? {
            ValueType::F32 => self.address(s, ValueType::F32),
            ValueType::Bf16 => {
                Err(DeviceError::Mismatch(format!("{s:?} is stored in bf16, and this kernel reads f32 only")))
            }
        }
    }

    /// Where `s` lives, tagged with its type for a kernel that takes `dp_values`.
    pub fn values(&self, s: Span) -> std::result::Result<CUdeviceptr, DeviceError> {
        self.tagged(s, self.stored_type(s)?)
    }
}

impl std::fmt::Debug for RegionMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionMemory")
            .field("lens", &self.slices.each_ref().map(|s| s.len()))
            .field("storing_bf16", &self.addresses.storing_bf16())
            .finish()
    }
}

impl RegionMemory {
    /// Allocates every region with `lens(region)` values, zeroed, stored in f32.
    pub fn new(gpu: &Gpu, lens: impl Fn(Region) -> usize) -> Result<Self> {
        let mut slices = Vec::with_capacity(REGIONS);
        for r in ALL {
            debug_assert_eq!(slot(r), slices.len());
            // One value at least, so that every region has a valid base pointer.
            slices
                .push(gpu.stream.alloc_zeros::<f32>(lens(r).max(1)).map_err(driver("allocating a region"))?);
        }
        let slices: [CudaSlice<f32>; REGIONS] = slices.try_into().expect("one slice per region");
        let addresses = Addresses::new(|r| {
            let s = &slices[slot(r)];
            (s.device_ptr(&gpu.stream).0, s.len())
        });
        Ok(RegionMemory { slices, bf16: None, addresses })
    }

    /// Stores the arena's `OfPrecision` spans in bf16 (allocating the bf16 stores of
    /// [`BF16_STORED`], zeroed), or every span in f32 (freeing them). The caller turns it on only in
    /// `Precision::Bf16`, as the host reference stores in bf16 only then.
    pub fn store_bf16(&mut self, gpu: &Gpu, on: bool) -> Result<()> {
        if on == self.addresses.storing_bf16() {
            return Ok(());
        }
        if !on {
            self.addresses.store_bf16(None);
            self.bf16 = None;
            return Ok(());
        }
        let mut stores = Vec::with_capacity(BF16_STORED.len());
        for r in BF16_STORED {
            let len = self.slices[slot(r)].len();
            stores.push(gpu.stream.alloc_zeros::<u16>(len).map_err(driver("allocating a bf16 store"))?);
        }
        let bases: [CUdeviceptr; BF16_STORED.len()] =
            std::array::from_fn(|i| stores[i].device_ptr(&gpu.stream).0);
        self.addresses.store_bf16(Some(bases));
        self.bf16 = Some(stores);
        Ok(())
    }

    /// Whether the arena's `OfPrecision` spans are stored in bf16.
    pub fn storing_bf16(&self) -> bool {
        self.addresses.storing_bf16()
    }

    /// A region's allocation.
    pub fn slice(&self, region: Region) -> &CudaSlice<f32> {
        &self.slices[slot(region)]
    }

    /// A region's allocation, to copy into.
    pub fn slice_mut(&mut self, region: Region) -> &mut CudaSlice<f32> {
        &mut self.slices[slot(region)]
    }

    /// Copies `values` into the start of a region (set-up and tests; a step copies through
    /// [`RegionMemory::slice_mut`]).
    pub fn upload(&mut self, gpu: &Gpu, region: Region, values: &[f32]) -> Result<()> {
        let slice = &mut self.slices[slot(region)];
        if values.len() > slice.len() {
            return Err(crate::CudaError::Mismatch(format!(
                "{} values into {region:?} of {}",
                values.len(),
                slice.len()
            )));
        }
        let mut view = slice.slice_mut(..values.len());
        gpu.stream.memcpy_htod(values, &mut view).map_err(driver("copying into a region"))
    }

    /// A region's whole f32 contents, copied back after the work queued before.
    pub fn download(&self, gpu: &Gpu, region: Region) -> Result<Vec<f32>> {
        gpu.stream.clone_dtoh(&self.slices[slot(region)]).map_err(driver("copying a region back"))
    }

    /// Copies `values` into the start of the arena's bf16 store, each rounded to bf16 as the host
    /// reference's store rounds it (set-up and tests: a step writes the store through its kernels).
    pub fn upload_arena_bf16(&mut self, gpu: &Gpu, values: &[f32]) -> Result<()> {
        let arena =
            BF16_STORED.iter().position(|&r| r == Region::Arena).expect("the arena is stored in bf16");
        let Some(store) = self.bf16.as_mut().map(|stores| &mut stores[arena]) else {
            return Err(crate::CudaError::Mismatch("the arena is not stored in bf16".into()));
        };
        if values.len() > store.len() {
            return Err(crate::CudaError::Mismatch(format!(
                "{} values into a bf16 arena of {}",
                values.len(),
                store.len()
            )));
        }
        let bits: Vec<u16> = values.iter().map(|&v| dp_kernels::gemm_bf16::bf16_bits(v)).collect();
        let mut view = store.slice_mut(..bits.len());
        gpu.stream.memcpy_htod(&bits, &mut view).map_err(driver("copying into a bf16 store"))
    }

    /// The arena's bf16 store as f32 values (tests), copied back after the work queued before; `None`
    /// while storing in f32.
    pub fn download_arena_bf16(&self, gpu: &Gpu) -> Result<Option<Vec<f32>>> {
        let Some(stores) = &self.bf16 else { return Ok(None) };
        let arena =
            BF16_STORED.iter().position(|&r| r == Region::Arena).expect("the arena is stored in bf16");
        let bits = gpu.stream.clone_dtoh(&stores[arena]).map_err(driver("copying a bf16 store back"))?;
        Ok(Some(bits.into_iter().map(|b| f32::from_bits(u32::from(b) << 16)).collect()))
    }

    /// The address arithmetic of the regions and their bf16 stores.
    pub fn addresses(&self) -> &Addresses {
        &self.addresses
    }

    /// The f32 address of a span, for a kernel that reads f32 only ([`Addresses::ptr`]): an error if
    /// it lies outside its region or is stored in bf16.
    pub(crate) fn ptr(&self, s: Span) -> std::result::Result<CUdeviceptr, DeviceError> {
        self.addresses.ptr(s)
    }

    /// The address of a span tagged with its stored type, for a kernel that takes `dp_values`
    /// ([`Addresses::values`]).
    pub(crate) fn values(&self, s: Span) -> std::result::Result<CUdeviceptr, DeviceError> {
        self.addresses.values(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regions of 1,000 values at bases 1 MiB apart (the arena at 3 MiB), and, storing in bf16, the
    /// bf16 stores of the arena, parameters and batch at 16, 17 and 18 MiB.
    fn addresses(storing_bf16: bool) -> Addresses {
        let mib = 1 << 20;
        let mut a = Addresses::new(|r| ((slot(r) as CUdeviceptr + 1) * mib, 1_000));
        if storing_bf16 {
            a.store_bf16(Some([16 * mib, 17 * mib, 18 * mib]));
        }
        a
    }

    #[test]
    fn an_arena_span_of_the_precision_lives_in_the_bf16_store_only_while_storing_in_bf16() {
        let s = Span::new(Region::Arena, 10, 5).of_precision();
        let f32_only = addresses(false);
        assert_eq!(f32_only.stored_type(s).unwrap(), ValueType::F32);
        assert_eq!(f32_only.values(s).unwrap(), (3 << 20) + 40);
        assert_eq!(f32_only.ptr(s).unwrap(), (3 << 20) + 40);

        let storing = addresses(true);
        assert_eq!(storing.stored_type(s).unwrap(), ValueType::Bf16);
        // The bf16 store's address, 2 bytes a value, tagged.
        assert_eq!(storing.values(s).unwrap(), (16 << 20) + 20 + BF16_TAG);
        assert!(storing.ptr(s).is_err(), "an f32-only kernel must not get a bf16 span");
        // Its f32 slot, where a product converts it, is the f32 arena's.
        assert_eq!(storing.address(s, ValueType::F32).unwrap(), (3 << 20) + 40);
    }

    #[test]
    fn f32_spans_stay_f32_and_untagged_while_storing_in_bf16() {
        let storing = addresses(true);
        for s in
            [Span::new(Region::Arena, 10, 5), Span::new(Region::Params, 0, 7), Span::new(Region::Grad, 3, 2)]
        {
            assert_eq!(storing.stored_type(s).unwrap(), ValueType::F32);
            assert_eq!(storing.values(s).unwrap() & BF16_TAG, 0);
            assert_eq!(storing.values(s).unwrap(), storing.ptr(s).unwrap());
        }
        // The parameters and the batch have bf16 slots (a product converts them there); the gradient
        // has none.
        let params = Span::new(Region::Params, 4, 2);
        assert_eq!(storing.tagged(params, ValueType::Bf16).unwrap(), (17 << 20) + 8 + BF16_TAG);
        assert_eq!(
            storing.address(Span::new(Region::Inputs, 1, 1), ValueType::Bf16).unwrap(),
            (18 << 20) + 2
        );
        assert!(storing.address(Span::new(Region::Grad, 0, 1), ValueType::Bf16).is_err());
        assert!(
            addresses(false).address(params, ValueType::Bf16).is_err(),
            "no bf16 store while storing f32"
        );
    }

    #[test]
    fn a_span_outside_its_region_or_marked_outside_the_arena_is_refused() {
        for storing in [false, true] {
            let a = addresses(storing);
            assert!(a.values(Span::new(Region::Arena, 999, 2)).is_err());
            assert!(a.ptr(Span::new(Region::Params, 1_000, 1)).is_err());
            assert!(a.values(Span::new(Region::Params, 0, 1).of_precision()).is_err());
            assert!(a.values(Span::new(Region::Arena, 0, 1_000)).is_ok());
        }
    }
}
