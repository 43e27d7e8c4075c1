//! The kernel programs' `RUNS` array (one slot per thread, by tid), mapped into the collector:
//! at every tick the collector takes each open run's unreported count with a compare-and-swap
//! on the slot's `word` (run tag and count in one 64-bit word). The thread's program adds to
//! that word and exchanges it with atomic instructions, so every folded call is reported
//! exactly once, by whichever takes it first: the thread (when its run ends) or the tick.

use anyhow::{Context as _, Result};
use aya::maps::Map;
use observer_common::{REPEAT_TICK, RUN_COUNT_MASK, RUN_SLOTS, RepeatRecord, RunSlot};
use std::os::fd::{AsFd as _, AsRawFd as _};
use std::sync::atomic::{AtomicU64, Ordering};

/// The mapping of `RUNS`; unmapped on drop.
pub struct Runs {
    base: *mut RunSlot,
    len: usize,
}

impl Runs {
    /// Maps `RUNS` (a `BPF_F_MMAPABLE` array of `RUN_SLOTS` [`RunSlot`]s).
    pub fn map(map: &Map) -> Result<Runs> {
        let Map::Array(data) = map else {
            anyhow::bail!("map RUNS is not an array");
        };
        let fd = data.fd().as_fd().as_raw_fd();
        let len = RUN_SLOTS as usize * std::mem::size_of::<RunSlot>();
        // SAFETY: maps `len` bytes of the array's values (an mmapable array's value area
        // starts at offset 0 and is `max_entries * value_size` bytes, value size being a
        // multiple of 8); the mapping stays valid after the fd is closed, until `munmap`.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("mapping RUNS");
        }
        Ok(Runs {
            base: base.cast(),
            len,
        })
    }

    /// Takes the unreported count of every slot, appending a record per run to `out`.
    pub fn take(&self, out: &mut Vec<RepeatRecord>) {
        for i in 0..RUN_SLOTS as usize {
            // SAFETY: `i < RUN_SLOTS`, inside the mapping; `word` is 8-byte aligned (first
            // field of a `repr(C)` struct in a page-aligned array of 8-byte multiples) and is
            // only ever accessed atomically, by the programs and here.
            let slot = unsafe { self.base.add(i) };
            let word = unsafe { AtomicU64::from_ptr(std::ptr::addr_of_mut!((*slot).word)) };
            let mut current = word.load(Ordering::Acquire);
            while current & RUN_COUNT_MASK != 0 {
                match word.compare_exchange_weak(
                    current,
                    current & !RUN_COUNT_MASK,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        // SAFETY: plain fields of a live slot; the thread that owns it may be
                        // writing them (a torn value only misnames the run: its count stays
                        // right), so they are read volatile, once each.
                        let (tid, pid, last_ns) = unsafe {
                            (
                                std::ptr::read_volatile(std::ptr::addr_of!((*slot).tid)),
                                std::ptr::read_volatile(std::ptr::addr_of!((*slot).pid)),
                                std::ptr::read_volatile(std::ptr::addr_of!((*slot).last_ns)),
                            )
                        };
                        out.push(RepeatRecord {
                            kind: observer_common::RECORD_REPEAT,
                            reason: REPEAT_TICK,
                            pid,
                            tid,
                            run: (current >> 32) as u32,
                            _pad: 0,
                            count: current & RUN_COUNT_MASK,
                            last_ns,
                        });
                        break;
                    }
                    Err(now) => current = now,
                }
            }
        }
    }
}

impl Drop for Runs {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, not used after this.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}
