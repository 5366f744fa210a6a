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

    /// A new allocation of `len` bytes, or `None` when the device is full or the mapping failed. A
    /// device allocation's bytes are all 0xff (NaN in f32 and in bf16): a GPU's fresh memory holds
    /// whatever it held, often zeros, so a value read before it is written shows here as NaN.
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
        if kind == Kind::Device {
            // SAFETY: inside the pages made readable and writable above.
            unsafe { std::ptr::write_bytes(start as *mut u8, 0xff, len) };
        }
        self.live.insert(start, Allocation { len, map_base: base, map_len, kind });
        if kind == Kind::Device {
            self.device_bytes += len;
        }
        Some(start)
    }

    /// Frees the allocation that starts at `start`; false when there is none of that kind.
    pub fn free(&mut self, start: usize, kind: Kind) -> bool {
        match self.live.get(&start) {
            Some(a) if a.kind == kind => {}
            _ => return false,
        }
        let a = self.live.remove(&start).expect("checked above");
        if kind == Kind::Device {
            self.device_bytes -= a.len;
        }
        // SAFETY: the mapping made by `allocate`, no longer recorded.
        unsafe { libc::munmap(a.map_base as *mut _, a.map_len) };
        true
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
        assert!(!memory.free(a, Kind::Pinned), "freed as the wrong kind");
        assert!(memory.free(a, Kind::Device));
        assert!(!memory.free(a, Kind::Device), "freed twice");
        assert!(!memory.is_device(a, 4));
        assert_eq!(memory.device_bytes(), 0);
        assert!(memory.free(p, Kind::Pinned));
    }
}
