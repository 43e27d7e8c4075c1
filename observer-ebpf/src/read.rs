//! Reading kernel memory through BTF-derived `FieldLoc`s: the walk from the current task to the
//! socket an fd names, and the socket's bound state and options.

use aya_ebpf::helpers::{bpf_probe_read_kernel, generated};
use observer_common::{
    BindRecord, COUNTER_READ_ERRORS, Config, FLAG_COUNT, FieldLoc, SK_WINDOW_MAX, flag, known,
};

use crate::{SCRATCH, SCRATCH_LEN, cfg, count};

/// Why a read did not produce a value.
pub(crate) enum Miss {
    /// The field does not exist on this kernel (its `FieldLoc` is unknown).
    Unknown,
    /// The kernel memory read failed.
    Fault,
}

/// Reads the field at `loc` in the object at `base`, as an unsigned integer of up to 64 bits.
/// One routine for plain members, bitfields and single bits of a flags word.
#[inline(always)]
pub(crate) fn field(base: *const u8, loc: &FieldLoc) -> Result<u64, Miss> {
    let loc = cfg(loc);
    if loc.bit_size == 0 || loc.bit_size > 64 {
        return Err(Miss::Unknown);
    }
    let shift = loc.bit_offset & 7;
    // Read only the bytes the field spans, so a field at the very end of an object never
    // reads past it.
    let mut len = (shift + loc.bit_size).div_ceil(8);
    if len > 8 {
        len = 8;
    }
    let mut raw: u64 = 0;
    // SAFETY: the helper validates the kernel address and fails instead of faulting; `len` is
    // at most 8, the size of `raw`.
    let rc = unsafe {
        generated::bpf_probe_read_kernel(
            (&mut raw as *mut u64).cast(),
            len,
            base.wrapping_add((loc.bit_offset / 8) as usize).cast(),
        )
    };
    if rc != 0 {
        return Err(Miss::Fault);
    }
    // A field that spans 9 bytes (shift > 0 and 64 bits) does not exist in practice; the top
    // bits would simply be cut.
    Ok(bits(raw, shift, loc.bit_size))
}

/// The `size` bits of `raw` starting at bit `shift` (a field's value from the word read at
/// its first byte).
#[inline(always)]
fn bits(raw: u64, shift: u32, size: u32) -> u64 {
    let value = raw >> shift;
    if size >= 64 {
        value
    } else {
        value & ((1u64 << size) - 1)
    }
}

/// Reads a pointer field; a NULL pointer is a miss like a failed read.
#[inline(always)]
fn pointer(base: *const u8, loc: &FieldLoc) -> Result<*const u8, Miss> {
    let value = field(base, loc)?;
    if value == 0 {
        return Err(Miss::Fault);
    }
    Ok(value as *const u8)
}

/// Counts a failed read (but not a field this kernel does not have: that is reported once, at
/// start, by the collector).
#[inline(always)]
fn note<T>(result: Result<T, Miss>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(Miss::Fault) => {
            count(COUNTER_READ_ERRORS);
            None
        }
        Err(Miss::Unknown) => None,
    }
}

/// Finds the `struct file` behind `fd` in the current task's fd table.
#[inline(always)]
fn file_of_fd(fd: i32, cfg_: &Config) -> Option<*const u8> {
    if fd < 0 {
        return None;
    }
    // SAFETY: the helper has no preconditions; it returns the current task's address.
    let task = unsafe { generated::bpf_get_current_task() } as *const u8;
    let files = note(pointer(task, &cfg_.task_files))?;
    let fdt = note(pointer(files, &cfg_.files_fdt))?;
    let max_fds = note(field(fdt, &cfg_.fdt_max_fds))?;
    if fd as u64 >= max_fds {
        return None;
    }
    let array = note(pointer(fdt, &cfg_.fdt_fd))?;
    // SAFETY: `fd < max_fds`, so the slot is inside the fd array; the helper validates the
    // address anyway.
    let file: *const u8 =
        unsafe { bpf_probe_read_kernel(array.wrapping_add(fd as usize * 8).cast()) }.ok()?;
    // A closed fd (NULL slot) is not an error: bind(EBADF) lands here.
    (!file.is_null()).then_some(file)
}

/// Fills the socket fields of `rec` from the socket behind `fd`. Whatever cannot be read stays
/// zero with its `known` bit clear.
#[inline(always)]
pub(crate) fn socket_fields(rec: &mut BindRecord, fd: i32, c: &Config) {
    let Some(file) = file_of_fd(fd, c) else {
        return;
    };
    let Some(socket) = note(pointer(file, &c.file_private_data)) else {
        return;
    };
    // A socket's file and the socket point at each other; any other file's private_data does
    // not point back (bind(ENOTSOCK) lands here).
    let Ok(back) = pointer(socket, &c.socket_file) else {
        return;
    };
    if back != file {
        return;
    }
    socket_file_fields(rec, socket, Some(file), c);
}

/// Fills the socket fields of `rec` from a `struct socket` (and its file, for the inode).
#[inline(always)]
pub(crate) fn socket_file_fields(
    rec: &mut BindRecord,
    socket: *const u8,
    file: Option<*const u8>,
    c: &Config,
) {
    let Some(sk) = note(pointer(socket, &c.socket_sk)) else {
        return;
    };
    if let Some(file) = file
        && let Some(ino) =
            note(pointer(file, &c.file_inode)).and_then(|i| note(field(i, &c.inode_ino)))
    {
        rec.ino = ino;
        rec.sock_known |= known::INODE;
    }
    sock_fields(rec, sk, c);
}

/// From a `struct socket`: its file (for the inode), then the socket fields.
#[inline(always)]
pub(crate) fn from_socket(rec: &mut BindRecord, socket: *const u8, c: &Config) {
    let file = pointer(socket, &c.socket_file).ok();
    socket_file_fields(rec, socket, file, c);
}

/// From a `struct sock`: up to its `struct socket` and file when BTF says how, else the
/// `struct sock` fields alone.
#[inline(always)]
pub(crate) fn from_sk(rec: &mut BindRecord, sk: *const u8, c: &Config) {
    match pointer(sk, &c.sk_socket) {
        Ok(socket) => from_socket(rec, socket, c),
        Err(_) => sock_fields(rec, sk, c),
    }
}

/// A copy of the first bytes of a `struct sock`, taken with one read so that each field after
/// it is a plain load rather than a helper call.
struct Window {
    sk: *const u8,
    /// The per-CPU scratch buffer holding the copy (`SCRATCH_LEN` bytes, twice
    /// `SK_WINDOW_MAX`, so a load of up to 16 bytes at any masked offset stays inside it).
    copy: *const u8,
    /// Valid bytes in `copy` (0 when there is no copy: every field is then read on its own).
    len: u32,
}

impl Window {
    #[inline(always)]
    fn take(sk: *const u8, c: &Config) -> Window {
        let mut window = Window {
            sk,
            copy: core::ptr::null(),
            len: 0,
        };
        let mut len = cfg(&c.sk_window);
        if len > SK_WINDOW_MAX {
            len = SK_WINDOW_MAX;
        }
        let Some(copy) = SCRATCH.get_ptr_mut(0) else {
            return window;
        };
        if len == 0 {
            return window;
        }
        // SAFETY: the helper validates the kernel address and fails instead of faulting;
        // `len` is at most `SK_WINDOW_MAX`, within the scratch buffer.
        let rc = unsafe { generated::bpf_probe_read_kernel(copy.cast(), len, sk.cast()) };
        if rc == 0 {
            window.copy = copy as *const u8;
            window.len = len;
        }
        window
    }

    /// `field()`, from the copy when the field lies inside it.
    #[inline(always)]
    fn field(&self, loc: &FieldLoc) -> Result<u64, Miss> {
        let l = cfg(loc);
        let start = l.bit_offset / 8;
        let shift = l.bit_offset & 7;
        let end = start + (shift + l.bit_size).div_ceil(8);
        if self.copy.is_null() || l.bit_size == 0 || l.bit_size > 64 || end > self.len {
            return field(self.sk, loc);
        }
        let off = (start & (SK_WINDOW_MAX - 1)) as usize;
        // SAFETY: `off < SK_WINDOW_MAX` and the buffer is twice that, so the 8-byte load is
        // inside it; bytes past the field are masked off below.
        let raw = unsafe { core::ptr::read_unaligned(self.copy.add(off).cast::<u64>()) };
        Ok(bits(raw, shift, l.bit_size))
    }

    /// `read_bytes()`, from the copy when the field lies inside it.
    #[inline(always)]
    fn bytes<const N: usize>(&self, loc: &FieldLoc) -> Option<[u8; N]> {
        let l = cfg(loc);
        let start = l.bit_offset / 8;
        if self.copy.is_null()
            || l.bit_size as usize != N * 8
            || l.bit_offset & 7 != 0
            || start + N as u32 > self.len
        {
            return read_bytes::<N>(self.sk, loc);
        }
        let off = (start & (SK_WINDOW_MAX - 1)) as usize;
        let mut out = [0u8; N];
        let mut i = 0;
        while i < N {
            // SAFETY: the mask keeps the index inside the `SCRATCH_LEN`-byte buffer (and, as
            // `off + i < SK_WINDOW_MAX + N`, never changes it).
            out[i] = unsafe { *self.copy.add((off + i) & (SCRATCH_LEN - 1)) };
            i += 1;
        }
        Some(out)
    }
}

/// Fills the `struct sock` fields of `rec` (everything but the inode), picking them out of one
/// copy of the socket where they lie inside it.
#[inline(always)]
fn sock_fields(rec: &mut BindRecord, sk: *const u8, c: &Config) {
    rec.sock_known |= known::SOCK;
    let w = Window::take(sk, c);
    if let Some(family) = note(w.field(&c.sk_family)) {
        rec.sock_family = family as u16;
        rec.sock_known |= known::FAMILY;
    }
    if let Some(port) = note(w.field(&c.sk_num)) {
        rec.bound_port = port as u16;
        let addr = if rec.sock_family == 10 {
            w.bytes::<16>(&c.sk_v6_rcv_saddr)
        } else {
            w.bytes::<4>(&c.sk_rcv_saddr).map(|v4| {
                let mut a = [0u8; 16];
                a[..4].copy_from_slice(&v4);
                a
            })
        };
        if let Some(addr) = addr {
            rec.bound_addr = addr;
            rec.sock_known |= known::BOUND;
        }
    }
    if let Some(dev) = note(w.field(&c.sk_bound_dev_if)) {
        rec.bound_dev_if = dev as u32;
        rec.sock_known |= known::DEV_IF;
    }
    let net = match w.field(&c.sk_net) {
        Ok(0) => Err(Miss::Fault),
        Ok(p) => Ok(p as *const u8),
        Err(m) => Err(m),
    };
    if let Some(inum) = note(net).and_then(|net| note(field(net, &c.net_inum))) {
        rec.netns = inum as u32;
        rec.sock_known |= known::NETNS;
    }
    if let (Some(proto), Some(ty)) = (note(w.field(&c.sk_protocol)), note(w.field(&c.sk_type))) {
        rec.protocol = proto as u16;
        rec.sock_type = ty as u16;
        rec.sock_known |= known::PROTOCOL;
    }
    if let Some(uid) = note(w.field(&c.sk_uid)) {
        rec.sk_uid = uid as u32;
        rec.sock_known |= known::SK_UID;
    }
    let mut i = 0;
    while i < FLAG_COUNT {
        if let Some(value) = note(w.field(&c.flag_locs[i])) {
            rec.flags_known |= 1 << i;
            if value != 0 {
                rec.flags |= 1 << i;
            }
        }
        i += 1;
    }
    rec.flags &= flag::ALL;
}

/// Copies `N` bytes of a byte-aligned field (an address).
#[inline(always)]
fn read_bytes<const N: usize>(base: *const u8, loc: &FieldLoc) -> Option<[u8; N]> {
    let loc = cfg(loc);
    if loc.bit_size as usize != N * 8 || loc.bit_offset & 7 != 0 {
        return None;
    }
    let mut out = [0u8; N];
    // SAFETY: the helper validates the kernel address; the length is the size of `out`.
    let rc = unsafe {
        generated::bpf_probe_read_kernel(
            out.as_mut_ptr().cast(),
            N as u32,
            base.wrapping_add((loc.bit_offset / 8) as usize).cast(),
        )
    };
    if rc != 0 {
        count(COUNTER_READ_ERRORS);
        return None;
    }
    Some(out)
}

/// The three options kept in `sock_common` (so also in a TIME_WAIT socket's): SO_REUSEADDR,
/// SO_REUSEPORT, IPV6_V6ONLY, as (`flag` bits set, bits read).
#[inline(always)]
pub(crate) fn common_flags(sk: *const u8, c: &Config) -> (u32, u32) {
    let (mut flags, mut known) = (0, 0);
    let mut i = 0;
    // REUSEADDR, REUSEPORT and V6ONLY are the first three bits of `flag`.
    while i < 3 {
        if let Ok(value) = field(sk, &c.flag_locs[i]) {
            known |= 1 << i;
            if value != 0 {
                flags |= 1 << i;
            }
        }
        i += 1;
    }
    (flags, known)
}
