//! Draining the kernel's ring buffer (`BPF_MAP_TYPE_RINGBUF`) in batches.
//!
//! aya's `RingBuf` publishes the consumer position after every record. The kernel reads that
//! word on every reservation, on the CPU of the program that reserves, so while the collector
//! drains, each `bind()` on the host takes a cache miss on a line the collector has just
//! written (on these VMs: the record path cost about 250 ns with aya's reader, 110 ns with
//! this one). Here the position is published once per batch, and the producer position is
//! read once per batch rather than chased record by record.
//!
//! The layout is the kernel's (`kernel/bpf/ringbuf.c`): one read-write page holding the
//! consumer position, then one read-only page holding the producer position, then the data
//! pages mapped twice in a row so that a record that wraps round the end reads as one slice.
//! Each record starts with an 8-byte header: a `u32` length whose top two bits are the
//! busy (not yet committed) and discard flags, and a `u32` the kernel uses internally.

use aya::maps::MapData;
use std::io;
use std::os::fd::{AsFd as _, AsRawFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// The record is reserved but not yet committed.
const BUSY_BIT: u32 = 1 << 31;
/// The record was discarded: skip it.
const DISCARD_BIT: u32 = 1 << 30;
/// Bytes of a record's header.
const HEADER_LEN: usize = 8;
/// The consumer position is published at least this often (in bytes of records consumed), so
/// a long drain frees room for the producers as it goes.
const PUBLISH_EVERY: usize = 256 << 10;

/// One mapping, unmapped on drop.
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Mapping {
    fn new(fd: RawFd, len: usize, prot: libc::c_int, offset: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh shared mapping of a map fd the caller keeps open; the kernel checks
        // the length, protection and offset against the ring buffer's layout.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd,
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned, unmapped once.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// The collector's end of the ring buffer.
pub struct Ring {
    /// Keeps the map fd open for as long as the mappings live.
    map: MapData,
    consumer: Mapping,
    producer: Mapping,
    /// Bytes of data (a power of two).
    size: usize,
    /// The next record to read; the kernel's copy is updated by `publish`.
    pos: usize,
}

// SAFETY: the raw pointers are to shared mappings owned by the `Ring`; nothing about them is
// tied to the thread that made them.
unsafe impl Send for Ring {}

impl Ring {
    /// Maps the ring buffer `map`.
    pub fn new(map: MapData) -> io::Result<Ring> {
        let size = map.info().map_err(io::Error::other)?.max_entries() as usize;
        if !size.is_power_of_two() {
            return Err(io::Error::other(format!(
                "ring buffer size {size} is not a power of two"
            )));
        }
        let page = crate::page_size();
        let fd = map.fd().as_fd().as_raw_fd();
        let consumer = Mapping::new(fd, page, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let producer = Mapping::new(fd, page + 2 * size, libc::PROT_READ, page)?;
        let mut ring = Ring {
            map,
            consumer,
            producer,
            size,
            pos: 0,
        };
        ring.pos = ring.consumer_pos().load(Ordering::Acquire);
        Ok(ring)
    }

    fn consumer_pos(&self) -> &AtomicUsize {
        // SAFETY: the first word of the consumer page, page-aligned, mapped for as long as
        // `self`; the kernel only reads it.
        unsafe { &*self.consumer.ptr.cast::<AtomicUsize>() }
    }

    fn producer_pos(&self) -> usize {
        // SAFETY: the first word of the producer page, page-aligned and mapped for as long as
        // `self`. The kernel stores it with release ordering after writing the header.
        unsafe { &*self.producer.ptr.cast::<AtomicUsize>() }.load(Ordering::Acquire)
    }

    fn publish(&self) {
        // Release: every read of the records before `pos` is done before the kernel may
        // reuse their room (it loads this with acquire).
        self.consumer_pos().store(self.pos, Ordering::Release);
    }

    /// Hands every record committed when it starts to `handle`, in order, and publishes the
    /// new position. Records committed after that wait for the next call: the kernel programs
    /// wake the collector at least once a millisecond while records keep coming, and reading
    /// right behind a producer that is still writing is what costs it the most. Stops early at a
    /// record still being written (the next call gets it) or at `handle`'s first error.
    pub fn drain(&mut self, mut handle: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        // SAFETY: the data pages follow the producer page; the mapping holds them twice.
        let data = unsafe {
            self.producer
                .ptr
                .cast::<u8>()
                .add(self.producer.len - 2 * self.size)
        };
        let mask = self.size - 1;
        let end = self.producer_pos();
        let mut published = self.pos;
        let mut result = Ok(());
        while self.pos != end {
            let off = self.pos & mask;
            // SAFETY: `off + HEADER_LEN <= size`, inside the first copy of the data; the header
            // is 8-aligned and the kernel commits it with an atomic exchange.
            let header = unsafe { &*data.add(off).cast::<AtomicU32>() }.load(Ordering::Acquire);
            if header & BUSY_BIT != 0 {
                break;
            }
            let len = (header & !(BUSY_BIT | DISCARD_BIT)) as usize;
            if len > self.size - HEADER_LEN {
                result = Err(io::Error::other(format!(
                    "ring buffer record of {len} bytes in a {} byte ring",
                    self.size
                )));
                break;
            }
            if header & DISCARD_BIT == 0 {
                // SAFETY: the record lies within the double mapping (`off < size`,
                // `len <= size - 8`), was committed (acquire above), and the kernel does not
                // reuse its room until the consumer position passes it (published below).
                let record = unsafe { std::slice::from_raw_parts(data.add(off + HEADER_LEN), len) };
                result = handle(record);
            }
            self.pos = self
                .pos
                .wrapping_add((len + HEADER_LEN).next_multiple_of(8));
            if result.is_err() {
                break;
            }
            if self.pos.wrapping_sub(published) >= PUBLISH_EVERY {
                self.publish();
                published = self.pos;
            }
        }
        if published != self.pos {
            self.publish();
        }
        result
    }
}

impl AsRawFd for Ring {
    fn as_raw_fd(&self) -> RawFd {
        self.map.fd().as_fd().as_raw_fd()
    }
}
