//! The regions of a device program on a GPU, and where each span's values live: one f32 allocation
//! per region, and, while storing in bf16 (docs/GPU.md, "bf16 storage"), a bf16 store of the arena and
//! of the regions a product may need in bf16, at the same offsets. While storing in bf16 the f32 arena
//! holds only its first values, where the compiler lays out every `F32` buffer
//! (`DpModel::DEVICE_ARENA_F32_PER_EXAMPLE`): the `OfPrecision` buffers after them live in the bf16
//! store alone, and have no f32 slot.
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
    /// The arena's values in all (its f32 allocation holds fewer while storing in bf16).
    arena_len: usize,
    /// The bf16 stores of [`BF16_STORED`], while storing in bf16.
    bf16: Option<Vec<CudaSlice<u16>>>,
    /// The f32 conversion slots ([`Operand::slot`]), one allocation, while storing in bf16.
    conversion: Option<CudaSlice<f32>>,
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

/// How a program's memory stores in bf16: the f32 arena cut to its first `arena_f32` values (the
/// `F32` buffers, which the compiler lays out first), and [`CONVERSION_SLOTS`] f32 conversion slots of
/// `conversion_slot` values each ([`Operand`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bf16Layout {
    pub arena_f32: usize,
    pub conversion_slot: usize,
}

/// The bytes of regions of `lens` values ([`RegionMemory::new`]), and storing in bf16 (`bf16`) the
/// bf16 stores and conversion slots [`RegionMemory::store_bf16`] adds and the f32 arena cut (each
/// region, store and slot one value at least, as allocated).
pub fn region_bytes(lens: impl Fn(Region) -> usize, bf16: Option<Bf16Layout>) -> u64 {
    // `CONVERSION_SLOTS` slots below.
    let f32_len = |r: Region| match (r, bf16) {
        (Region::Arena, Some(layout)) => layout.arena_f32.min(lens(r)),
        _ => lens(r),
    };
    let f32s: u64 = ALL.iter().map(|&r| f32_len(r).max(1) as u64 * 4).sum();
    let bf16s: u64 = match bf16 {
        Some(layout) => {
            let stores: u64 = BF16_STORED.iter().map(|&r| lens(r).max(1) as u64 * 2).sum();
            stores + (CONVERSION_SLOTS * layout.conversion_slot.max(1)) as u64 * 4
        }
        None => 0,
    };
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
    /// Values per region's f32 allocation.
    lens: [usize; REGIONS],
    /// The bf16 store's base per region, while storing in bf16 (the regions of [`BF16_STORED`]).
    bf16: [Option<CUdeviceptr>; REGIONS],
    /// Values per bf16 store.
    bf16_lens: [usize; REGIONS],
    /// While storing in bf16: two f32 slots of this many values each, from this base, where a span
    /// stored in bf16 is converted for an f32 product (it has no f32 slot in the arena): one for an
    /// operand, one for C ([`Operand::slot`]).
    conversion: Option<(CUdeviceptr, usize)>,
}

/// Which of a product's spans a conversion slot is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operand {
    A,
    B,
    C,
}

/// The conversion slots while storing in bf16.
pub const CONVERSION_SLOTS: usize = 2;

impl Operand {
    /// Its conversion slot: A and B share one, as an f32 product never widens both (two operands
    /// stored in bf16 are multiplied in bf16, `ProductPlan::of`); C has the other.
    pub fn slot(self) -> usize {
        match self {
            Operand::A | Operand::B => 0,
            Operand::C => 1,
        }
    }
}

impl Addresses {
    /// Each region at the f32 base and with the number of values `region` gives, no bf16 store.
    pub fn new(region: impl Fn(Region) -> (CUdeviceptr, usize)) -> Self {
        let mut addresses = Addresses {
            f32: [0; REGIONS],
            lens: [0; REGIONS],
            bf16: [None; REGIONS],
            bf16_lens: [0; REGIONS],
            conversion: None,
        };
        for r in ALL {
            (addresses.f32[slot(r)], addresses.lens[slot(r)]) = region(r);
        }
        addresses
    }

    /// Stores the regions of [`BF16_STORED`] in bf16 at `stores` (their bases and values, in that
    /// order), or nothing in bf16.
    pub fn store_bf16(&mut self, stores: Option<[(CUdeviceptr, usize); BF16_STORED.len()]>) {
        self.bf16 = [None; REGIONS];
        self.bf16_lens = [0; REGIONS];
        if let Some(stores) = stores {
            for (region, (base, len)) in BF16_STORED.into_iter().zip(stores) {
                self.bf16[slot(region)] = Some(base);
                self.bf16_lens[slot(region)] = len;
            }
        }
    }

    /// The f32 conversion slots of `len` values each from `base` ([`Operand::slot`]), or none.
    pub fn set_conversion_slots(&mut self, slots: Option<(CUdeviceptr, usize)>) {
        self.conversion = slots;
    }

    /// The address of `s`'s slot of type `ty` as `operand` of a product: an arena span stored in bf16
    /// wanted in f32 is converted into the operand's conversion slot (it has no f32 slot of its own);
    /// any other span's slot is [`address`](Self::address)'s.
    pub fn operand_address(
        &self,
        s: Span,
        ty: ValueType,
        operand: Operand,
    ) -> std::result::Result<CUdeviceptr, DeviceError> {
        if !self.in_conversion_slot(s, ty)? {
            return self.address(s, ty);
        }
        let (base, len) = self.conversion.ok_or_else(|| {
            DeviceError::Mismatch(format!("{s:?} in f32: no conversion slots while storing in bf16"))
        })?;
        if s.len > len {
            return Err(DeviceError::Mismatch(format!(
                "{s:?} in f32: longer than a conversion slot of {len}"
            )));
        }
        Ok(base + (operand.slot() * len * ValueType::F32.size()) as CUdeviceptr)
    }

    /// Whether `s` wanted in `ty` goes to a conversion slot: stored in bf16, wanted in f32.
    pub fn in_conversion_slot(&self, s: Span, ty: ValueType) -> std::result::Result<bool, DeviceError> {
        Ok(ty == ValueType::F32 && self.stored_type(s)? == ValueType::Bf16)
    }

    /// Moves `region`'s f32 allocation to `base`, of `len` values (the arena cut to its `F32` buffers
    /// while storing in bf16, or grown back).
    pub fn set_f32(&mut self, region: Region, base: CUdeviceptr, len: usize) {
        (self.f32[slot(region)], self.lens[slot(region)]) = (base, len);
    }

    /// Whether `OfPrecision` spans are stored in bf16.
    pub fn storing_bf16(&self) -> bool {
        self.bf16[slot(Region::Arena)].is_some()
    }

    /// The type `s` is stored in, after checking that only arena spans are marked `OfPrecision` and
    /// that `s` lies inside the store of that type.
    pub fn stored_type(&self, s: Span) -> std::result::Result<ValueType, DeviceError> {
        let ty = match (s.stored, s.region) {
            (Stored::F32, _) => ValueType::F32,
            (Stored::OfPrecision, Region::Arena) => {
                if self.storing_bf16() {
                    ValueType::Bf16
                } else {
                    ValueType::F32
                }
            }
            (Stored::OfPrecision, region) => {
                return Err(DeviceError::Mismatch(format!(
                    "{s:?}: only arena buffers are stored in the device's precision, not {region:?}"
                )))
            }
        };
        self.check_inside(s, ty)?;
        Ok(ty)
    }

    /// That `s` lies inside its region's store of type `ty`.
    fn check_inside(&self, s: Span, ty: ValueType) -> std::result::Result<(), DeviceError> {
        let len = match ty {
            ValueType::F32 => self.lens[slot(s.region)],
            ValueType::Bf16 => self.bf16_lens[slot(s.region)],
        };
        if s.offset + s.len > len {
            return Err(DeviceError::Mismatch(format!("{s:?} outside the {ty:?} store of {len} values")));
        }
        Ok(())
    }

    /// The address of `s`'s slot in the store of type `ty`: where it lives if that is its stored
    /// type, where a product converts it otherwise.
    pub fn address(&self, s: Span, ty: ValueType) -> std::result::Result<CUdeviceptr, DeviceError> {
        self.stored_type(s)?;
        if self.bf16[slot(s.region)].is_some() || ty == ValueType::F32 {
            // A slot of the other type must be inside its store too: an `OfPrecision` span has no
            // f32 slot past the f32 arena's `F32` buffers.
            self.check_inside(s, ty)?;
        }
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
        Self::with_arena_f32(gpu, lens, None)
    }

    /// [`new`](Self::new), the f32 arena allocated with `arena_f32` values when given (the cut
    /// [`store_bf16`](Self::store_bf16) makes, for memory that is to store in bf16 next).
    pub fn with_arena_f32(
        gpu: &Gpu,
        lens: impl Fn(Region) -> usize,
        arena_f32: Option<usize>,
    ) -> Result<Self> {
        let mut slices = Vec::with_capacity(REGIONS);
        for r in ALL {
            debug_assert_eq!(slot(r), slices.len());
            let len = match (r, arena_f32) {
                (Region::Arena, Some(cut)) => cut.min(lens(r)),
                _ => lens(r),
            };
            // One value at least, so that every region has a valid base pointer.
            slices.push(gpu.stream.alloc_zeros::<f32>(len.max(1)).map_err(driver("allocating a region"))?);
        }
        let slices: [CudaSlice<f32>; REGIONS] = slices.try_into().expect("one slice per region");
        let addresses = Addresses::new(|r| {
            let s = &slices[slot(r)];
            (s.device_ptr(&gpu.stream).0, s.len())
        });
        let arena_len = lens(Region::Arena).max(1);
        Ok(RegionMemory { slices, arena_len, bf16: None, conversion: None, addresses })
    }

    /// Stores the arena's `OfPrecision` spans in bf16 by `layout` (allocating the bf16 stores of
    /// [`BF16_STORED`] and the conversion slots, zeroed, and cutting the f32 arena to its first
    /// `arena_f32` values, where every `F32` arena span lies), or every span in f32 (`None`: freeing
    /// them, the f32 arena whole again). The caller stores in bf16 only in `Precision::Bf16`, as the
    /// host reference does. The arena's values are not kept (a step writes what it reads).
    pub fn store_bf16(&mut self, gpu: &Gpu, layout: Option<Bf16Layout>) -> Result<()> {
        let Some(layout) = layout else {
            if !self.addresses.storing_bf16() {
                return Ok(());
            }
            self.addresses.store_bf16(None);
            self.addresses.set_conversion_slots(None);
            (self.bf16, self.conversion) = (None, None);
            return self.reallocate_f32_arena(gpu, self.arena_len);
        };
        if self.addresses.storing_bf16() {
            return Ok(());
        }
        // The f32 arena cut first, so that the stores take the memory it frees.
        self.reallocate_f32_arena(gpu, layout.arena_f32.min(self.arena_len))?;
        let slots = match gpu.stream.alloc_zeros::<f32>(CONVERSION_SLOTS * layout.conversion_slot.max(1)) {
            Ok(slots) => slots,
            Err(e) => {
                // The original error, whatever growing the arena back does (a failed growth leaves
                // an arena of one value: every span is refused, none misplaced).
                let _ = self.reallocate_f32_arena(gpu, self.arena_len);
                return Err(driver("allocating the conversion slots")(e));
            }
        };
        let stores = BF16_STORED
            .iter()
            .map(|&r| {
                let len = match r {
                    Region::Arena => self.arena_len,
                    _ => self.slices[slot(r)].len(),
                };
                gpu.stream.alloc_zeros::<u16>(len.max(1)).map_err(driver("allocating a bf16 store"))
            })
            .collect::<Result<Vec<_>>>();
        let stores = match stores {
            Ok(stores) => stores,
            Err(e) => {
                // Left storing in f32, the arena whole again if it can be (see above).
                drop(slots);
                let _ = self.reallocate_f32_arena(gpu, self.arena_len);
                return Err(e);
            }
        };
        let bases: [(CUdeviceptr, usize); BF16_STORED.len()] =
            std::array::from_fn(|i| (stores[i].device_ptr(&gpu.stream).0, stores[i].len()));
        self.addresses.store_bf16(Some(bases));
        let slot = slots.len() / CONVERSION_SLOTS;
        self.addresses.set_conversion_slots(Some((slots.device_ptr(&gpu.stream).0, slot)));
        (self.bf16, self.conversion) = (Some(stores), Some(slots));
        Ok(())
    }

    /// The f32 arena allocated again with `len` values, zeroed (the old one freed first).
    fn reallocate_f32_arena(&mut self, gpu: &Gpu, len: usize) -> Result<()> {
        let arena = &mut self.slices[slot(Region::Arena)];
        if arena.len() == len.max(1) {
            return Ok(());
        }
        // Freed before the allocation: the two need not fit at once. Until the new one is there the
        // addresses name the one-value stand-in, so a failure refuses every span rather than leave
        // them in freed memory.
        *arena = gpu.stream.alloc_zeros::<f32>(1).map_err(driver("allocating the arena"))?;
        self.addresses.set_f32(Region::Arena, arena.device_ptr(&gpu.stream).0, 1);
        *arena = gpu.stream.alloc_zeros::<f32>(len.max(1)).map_err(driver("allocating the arena"))?;
        let base = arena.device_ptr(&gpu.stream).0;
        self.addresses.set_f32(Region::Arena, base, arena.len());
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
            a.store_bf16(Some([(16 * mib, 1_000), (17 * mib, 1_000), (18 * mib, 1_000)]));
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

    /// Storing in bf16 with the f32 arena cut to its first 600 values (the `F32` buffers) and
    /// conversion slots of 300 values at 20 MiB: an `F32` span past the cut is refused; a span stored
    /// in bf16 has no f32 slot of its own, and as a product's operand goes to that operand's slot.
    #[test]
    fn a_cut_f32_arena_leaves_bf16_spans_their_conversion_slots_only() {
        let mib = 1 << 20;
        let mut a = addresses(true);
        a.set_f32(Region::Arena, 3 * mib, 600);
        a.set_conversion_slots(Some((20 * mib, 300)));
        assert_eq!(a.ptr(Span::new(Region::Arena, 590, 10)).unwrap(), 3 * mib + 4 * 590);
        assert!(a.ptr(Span::new(Region::Arena, 595, 10)).is_err(), "an F32 span past the cut");
        let s = Span::new(Region::Arena, 700, 200).of_precision();
        assert_eq!(a.values(s).unwrap(), 16 * mib + 2 * 700 + BF16_TAG, "its own bf16 slot");
        assert!(a.address(s, ValueType::F32).is_err(), "no f32 slot of its own");
        for (operand, k) in [(Operand::A, 0), (Operand::B, 0), (Operand::C, 1)] {
            assert_eq!(a.operand_address(s, ValueType::F32, operand).unwrap(), 20 * mib + k * 300 * 4);
            // In bf16 it is where it lives; a weight's bf16 slot is its own.
            assert_eq!(a.operand_address(s, ValueType::Bf16, operand).unwrap(), 16 * mib + 2 * 700);
            let w = Span::new(Region::Params, 4, 2);
            assert_eq!(a.operand_address(w, ValueType::Bf16, operand).unwrap(), 17 * mib + 8);
        }
        let long = Span::new(Region::Arena, 600, 301).of_precision();
        assert!(a.operand_address(long, ValueType::F32, Operand::A).is_err(), "longer than a slot");
        a.set_conversion_slots(None);
        assert!(a.operand_address(s, ValueType::F32, Operand::A).is_err(), "no slots");
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
