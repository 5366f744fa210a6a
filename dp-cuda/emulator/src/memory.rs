//! Device and pinned host memory. A device allocation is mapped between two inaccessible pages, its
//! end as close to the second as 16-byte alignment allows, so a kernel that reads or writes past
//! either end of a buffer stops the process (as a GPU's illegal address would fail the launch)
//! instead of reading a neighbour's values; a freed allocation is unmapped, so a late use of it
//! stops the process too. Copies and products check their device ranges against the live
//! allocations before they are queued.

use std::collections::BTreeMap;

/// The bytes a device may hold, from `DP_EMULATOR_MEMORY_BYTES` (8 GiB by default): allocations past
/// it fail as a full GPU's would.
pub fn capacity() -> usize {
    std::env::var("DP_EMULATOR_MEMORY_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(8 << 30)
}

/// What an allocation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Device memory (`cuMemAlloc*`).
    Device,
    /// Page-locked host memory (`cuMemHostAlloc`): asynchronous copies read or write it when they
    /// run, not when they are queued.
    Pinned,
}

struct Allocation {
    len: usize,
    map_base: usize,
    map_len: usize,
    kind: Kind,
}

/// The live allocations, by start address.
#[derive(Default)]
pub struct Memory {
    live: BTreeMap<usize, Allocation>,
    device_bytes: usize,
}

fn page() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

fn round_up(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

impl Memory {
    /// Device bytes allocated now.
    pub fn device_bytes(&self) -> usize {
        self.device_bytes
    }

    /// A new allocation of `len` bytes, or `None` when the device is full or the mapping failed. Its
    /// bytes are all 0xff (NaN in f32 and in bf16), and so are the bytes around it up to the guard
    /// pages (nearly a page before it, up to 15 after it): a GPU's fresh memory holds whatever it
    /// held, often zeros, so a value read before it is written, or read just past either end, shows
    /// here as NaN; [`free`](Self::free) finds a write past either end.
    pub fn allocate(&mut self, len: usize, kind: Kind) -> Option<usize> {
        if kind == Kind::Device && self.device_bytes + len > capacity() {
            return None;
        }
        let page = page();
        let body = round_up(len.max(1), page);
        let map_len = body + 2 * page;
        // SAFETY: an anonymous private mapping; the result is checked.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return None;
        }
        let base = base as usize;
        // SAFETY: the pages between the two guards belong to this mapping.
        if unsafe { libc::mprotect((base + page) as *mut _, body, libc::PROT_READ | libc::PROT_WRITE) } != 0 {
            // SAFETY: the mapping made above.
            unsafe { libc::munmap(base as *mut _, map_len) };
            return None;
        }
        let start = base + page + body - round_up(len.max(1), 16);
        // SAFETY: the pages made readable and writable above.
        unsafe { std::ptr::write_bytes((base + page) as *mut u8, 0xff, body) };
        self.live.insert(start, Allocation { len, map_base: base, map_len, kind });
        if kind == Kind::Device {
            self.device_bytes += len;
        }
        Some(start)
    }

    /// Frees the allocation that starts at `start`: an error when there is none of that kind, or
    /// when a byte around it (between it and its guard pages) is no longer 0xff, i.e. something
    /// wrote past one of its ends (it is freed all the same).
    pub fn free(&mut self, start: usize, kind: Kind) -> Result<(), String> {
        match self.live.get(&start) {
            Some(a) if a.kind == kind => {}
            _ => return Err(format!("{start:#x} is not a live {kind:?} allocation")),
        }
        let a = self.live.remove(&start).expect("checked above");
        if kind == Kind::Device {
            self.device_bytes -= a.len;
        }
        let page = page();
        let (body_start, body_end) = (a.map_base + page, a.map_base + a.map_len - page);
        // SAFETY: the readable pages of the mapping, still mapped.
        let around =
            |from: usize, to: usize| unsafe { std::slice::from_raw_parts(from as *const u8, to - from) };
        let before =
            around(body_start, start).iter().rposition(|&b| b != 0xff).map(|i| start - body_start - i);
        let after = around(start + a.len, body_end).iter().position(|&b| b != 0xff).map(|i| i + 1);
        // SAFETY: the mapping made by `allocate`, no longer recorded.
        unsafe { libc::munmap(a.map_base as *mut _, a.map_len) };
        match (before, after) {
            (None, None) => Ok(()),
            (Some(back), _) => Err(format!(
                "something wrote {back} bytes before the {kind:?} allocation of {} bytes at {start:#x}",
                a.len
            )),
            (None, Some(past)) => Err(format!(
                "something wrote {past} bytes past the end of the {kind:?} allocation of {} bytes at {start:#x}",
                a.len
            )),
        }
    }

    /// The kind of the allocation holding every byte of `[at, at + len)`, or `None` when no single
    /// live allocation holds them all.
    pub fn holder(&self, at: usize, len: usize) -> Option<Kind> {
        let (&start, a) = self.live.range(..=at).next_back()?;
        (at + len <= start + a.len.max(1) && (len > 0 || at <= start + a.len)).then_some(a.kind)
    }

    /// Whether `[at, at + len)` lies inside one live device allocation.
    pub fn is_device(&self, at: usize, len: usize) -> bool {
        self.holder(at, len) == Some(Kind::Device)
    }

    /// A description of where `at` is, for errors.
    pub fn describe(&self, at: usize, len: usize) -> String {
        match self.live.range(..=at).next_back() {
            Some((&start, a)) => format!(
                "{len} bytes at {at:#x}, {} bytes into a {:?} allocation of {} bytes at {start:#x}",
                at - start,
                a.kind,
                a.len
            ),
            None => format!("{len} bytes at {at:#x}, before every allocation"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked_against_the_allocation_that_holds_them() {
        let mut memory = Memory::default();
        let a = memory.allocate(100, Kind::Device).unwrap();
        let p = memory.allocate(64, Kind::Pinned).unwrap();
        assert_eq!(a % 16, 0);
        assert!(memory.is_device(a, 100));
        assert!(memory.is_device(a + 96, 4));
        assert!(!memory.is_device(a + 97, 4), "past the end");
        assert!(!memory.is_device(a - 4, 8), "before the start");
        assert_eq!(memory.holder(p, 64), Some(Kind::Pinned));
        assert_eq!(memory.device_bytes(), 100);
        // SAFETY: inside the allocation just made.
        unsafe { std::ptr::write_bytes(a as *mut u8, 7, 100) };
        assert!(memory.free(a, Kind::Pinned).is_err(), "freed as the wrong kind");
        assert!(memory.free(a, Kind::Device).is_ok());
        assert!(memory.free(a, Kind::Device).is_err(), "freed twice");
        assert!(!memory.is_device(a, 4));
        assert_eq!(memory.device_bytes(), 0);
        assert!(memory.free(p, Kind::Pinned).is_ok());
    }

    #[test]
    fn the_bytes_around_an_allocation_read_as_nan_and_a_write_there_is_found_at_free() {
        let mut memory = Memory::default();
        for (offset, found) in [(-1isize, "1 bytes before"), (100, "1 bytes past"), (110, "11 bytes past")] {
            let a = memory.allocate(100, Kind::Device).unwrap();
            // SAFETY: the readable bytes around the allocation (up to its guard pages).
            unsafe {
                assert!(f32::from_bits(*((a as isize - 4) as *const u32)).is_nan(), "before it");
                assert!(f32::from_bits(*((a + 100) as *const u32)).is_nan(), "after it");
                *((a as isize + offset) as *mut u8) = 0;
            }
            let error = memory.free(a, Kind::Device).unwrap_err();
            assert!(error.contains(found), "{error}");
        }
        let p = memory.allocate(8, Kind::Pinned).unwrap();
        // SAFETY: the allocation's own bytes.
        assert!(f32::from_bits(unsafe { *(p as *const u32) }).is_nan(), "fresh pinned memory is NaN too");
        assert!(memory.free(p, Kind::Pinned).is_ok());
    }
}
