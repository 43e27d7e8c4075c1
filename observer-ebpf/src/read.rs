//! Reading kernel memory through BTF-derived `FieldLoc`s: the walk from the current task to the
//! socket an fd names, and the socket's bound state and options.

use aya_ebpf::helpers::{bpf_probe_read_kernel, generated};
use observer_common::{
    BindRecord, Config, FLAG_COUNT, FieldLoc, OwnerQuery, SK_SPANS, SPAN_MAX, flag, known,
    unreadable,
};

use crate::{SCRATCH_LEN, Taken, cfg};

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

/// Reads the field at `loc` of an object the verifier knows the BTF type of (`base` came from
/// `bpf_get_current_task_btf`, `bpf_task_pt_regs`, or a pointer member of such an object): a
/// plain load, which the verifier checks against the type and turns into one that yields 0
/// instead of faulting. About a tenth of the cost of the helper call `field()` makes (13 ns
/// each on these VMs). Byte-aligned fields of 1, 2, 4 or 8 bytes only; others go to `field()`.
#[inline(always)]
pub(crate) fn btf_field(base: *const u8, loc: &FieldLoc) -> Result<u64, Miss> {
    let l = cfg(loc);
    if l.bit_offset & 7 != 0 {
        return field(base, loc);
    }
    let at = base.wrapping_add((l.bit_offset / 8) as usize);
    // SAFETY: `base` is a BTF-typed kernel pointer and `loc` a member of its type found in the
    // running kernel's BTF, so the verifier accepts the load only at that member and makes it
    // fault-safe (a NULL or stale `base` reads as 0). The offset is a constant to the verifier
    // (read-only config), as its pointer checks require.
    let value = unsafe {
        match l.bit_size {
            64 => core::ptr::read_volatile(at.cast::<u64>()),
            32 => u64::from(core::ptr::read_volatile(at.cast::<u32>())),
            16 => u64::from(core::ptr::read_volatile(at.cast::<u16>())),
            8 => u64::from(core::ptr::read_volatile(at)),
            _ => return field(base, loc),
        }
    };
    Ok(value)
}

/// Reads a pointer member of a BTF-typed object (see `btf_field`); NULL is a miss.
#[inline(always)]
fn btf_pointer(base: *const u8, loc: &FieldLoc) -> Result<*const u8, Miss> {
    match btf_field(base, loc)? {
        0 => Err(Miss::Fault),
        value => Ok(value as *const u8),
    }
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

/// The value, or `None`; a failed read marks `bit` (of [`unreadable`]) in `lost`. A field this
/// kernel does not have is no failure: the collector reports those once, at start.
#[inline(always)]
fn note<T>(result: Result<T, Miss>, lost: &mut u32, bit: u32) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(Miss::Fault) => {
            *lost |= bit;
            None
        }
        Err(Miss::Unknown) => None,
    }
}

/// Finds the `struct file` behind `fd` in the current task's fd table. A failed read marks
/// [`unreadable::SOCKET`] in `lost`.
#[inline(always)]
fn file_of_fd(fd: i32, cfg_: &Config, lost: &mut u32) -> Option<*const u8> {
    if fd < 0 {
        return None;
    }
    let bit = unreadable::SOCKET;
    // SAFETY: the helper has no preconditions; it returns the current task as a BTF pointer,
    // so the walk to the fd array is plain loads (`btf_field`).
    let task = unsafe { generated::bpf_get_current_task_btf() } as *const u8;
    let files = note(btf_pointer(task, &cfg_.task_files), lost, bit)?;
    let fdt = note(btf_pointer(files, &cfg_.files_fdt), lost, bit)?;
    let max_fds = note(btf_field(fdt, &cfg_.fdt_max_fds), lost, bit)?;
    if fd as u64 >= max_fds {
        return None;
    }
    // `fd` is a pointer to pointers: the verifier types a load of it as a plain number, and the
    // slot is read with the helper below.
    let array = note(btf_pointer(fdt, &cfg_.fdt_fd), lost, bit)?;
    // SAFETY: `fd < max_fds`, so the slot is inside the fd array; the helper validates the
    // address anyway.
    let slot = unsafe { bpf_probe_read_kernel(array.wrapping_add(fd as usize * 8).cast()) };
    let file: *const u8 = note(slot.map_err(|_| Miss::Fault), lost, bit)?;
    // A closed fd (NULL slot) is not an error: bind(EBADF) lands here.
    (!file.is_null()).then_some(file)
}

/// Fills the socket fields of `rec` from the socket behind `fd`. Whatever cannot be read stays
/// zero with its `known` bit clear, and its [`unreadable`] bit set when a read failed.
#[inline(always)]
pub(crate) fn socket_fields(rec: &mut BindRecord, fd: i32, c: &Config) {
    let lost = &mut rec.unreadable;
    let bit = unreadable::SOCKET;
    let Some(file) = file_of_fd(fd, c, lost) else {
        return;
    };
    // Not `pointer()`: a NULL `private_data` is a file that is no socket (bind(ENOTSOCK) on
    // many kinds of file), not a failed read.
    let socket = match note(field(file, &c.file_private_data), lost, bit) {
        Some(0) | None => return,
        Some(p) => p as *const u8,
    };
    let Some((back, sk)) = note(pair(socket, &c.socket_file, &c.socket_sk), lost, bit) else {
        return;
    };
    // A socket's file and the socket point at each other; any other file's private_data does
    // not point back (bind(ENOTSOCK) lands here).
    if back != file as u64 {
        return;
    }
    if sk == 0 {
        // A socket file without its sock: nothing about it can be read.
        *lost |= bit;
        return;
    }
    inode(rec, socket, Some(file), c);
    sock_fields(rec, sk as *const u8, c);
}

/// `S_IFMT` and `S_IFSOCK` (`include/uapi/linux/stat.h`).
const S_IFMT: u64 = 0o170000;
const S_IFSOCK: u64 = 0o140000;
/// `AF_INET`, `AF_INET6`.
const AF_INET: u64 = 2;
const AF_INET6: u64 = 10;

/// What [`socket_owner`] found for one descriptor.
pub(crate) struct Owned {
    pub tgid: u32,
    pub ino: u64,
    pub refs: u64,
    /// [`common_flags`] of the socket.
    pub flags: (u32, u32),
}

/// For `iter/task_file`: (tgid, socket inode, references to the file, options) when `file` (open in `task`) is an inet socket
/// of the namespace and port `q` names. `task` and `file` are the iterator's BTF-typed
/// pointers, and `bpf_sock_from_file` gives a socket file's `struct socket` typed too, so the
/// whole test is plain loads: a walk of every descriptor of a process with 100k connections
/// makes no helper read at all.
#[inline(always)]
pub(crate) fn socket_owner(
    task: *const u8,
    file: *const u8,
    q: &OwnerQuery,
    c: &Config,
) -> Option<Owned> {
    let inode = btf_pointer(file, &c.file_inode).ok()?;
    if btf_field(inode, &c.inode_mode).ok()? & S_IFMT != S_IFSOCK {
        return None;
    }
    // SAFETY: `file` is the iterator's non-NULL, BTF-typed file; the helper returns its
    // socket (checking that the file is one: `sock_from_file`), or NULL.
    let socket = unsafe { generated::bpf_sock_from_file(file as *mut _) } as *const u8;
    if socket.is_null() {
        return None;
    }
    let sk = btf_pointer(socket, &c.socket_sk).ok()?;
    if btf_field(sk, &c.sk_num).ok()? != u64::from(q.port) {
        return None;
    }
    let family = btf_field(sk, &c.sk_family).ok()?;
    if family != AF_INET && family != AF_INET6 {
        return None;
    }
    let net = btf_pointer(sk, &c.sk_net).ok()?;
    if btf_field(net, &c.net_inum).ok()? != u64::from(q.netns_ino) {
        return None;
    }
    let tgid = btf_field(task, &c.task_tgid).ok()?;
    let ino = btf_field(inode, &c.inode_ino).ok()?;
    let refs = match btf_field(file, &c.file_refs) {
        Ok(raw) => raw.wrapping_add(u64::from(cfg(&c.file_refs_bias))),
        Err(_) => 0,
    };
    Some(Owned {
        tgid: tgid as u32,
        ino,
        refs,
        flags: common_flags(sk, c),
    })
}

/// For `iter/task`: the tgid of `task` (the iterator's BTF-typed pointer) when it is in the
/// network namespace `netns_ino`. Plain loads only.
#[inline(always)]
pub(crate) fn task_in_netns(task: *const u8, netns_ino: u32, c: &Config) -> Option<u32> {
    let nsproxy = btf_pointer(task, &c.task_nsproxy).ok()?;
    let net = btf_pointer(nsproxy, &c.nsproxy_net_ns).ok()?;
    if btf_field(net, &c.net_inum).ok()? != u64::from(netns_ino) {
        return None;
    }
    Some(btf_field(task, &c.task_tgid).ok()? as u32)
}

/// Two 64-bit members of one object, with a single read when they are neighbours (as
/// `socket.file` and `socket.sk` are).
#[inline(always)]
fn pair(base: *const u8, a: &FieldLoc, b: &FieldLoc) -> Result<(u64, u64), Miss> {
    let (la, lb) = (cfg(a), cfg(b));
    let neighbours = la.bit_size == 64
        && lb.bit_size == 64
        && la.bit_offset & 63 == 0
        && lb.bit_offset == la.bit_offset + 64;
    if !neighbours {
        return Ok((field(base, a)?, field(base, b)?));
    }
    let mut raw = [0u64; 2];
    // SAFETY: the helper validates the kernel address and fails instead of faulting; 16 bytes
    // is the size of `raw`.
    let rc = unsafe {
        generated::bpf_probe_read_kernel(
            raw.as_mut_ptr().cast(),
            16,
            base.wrapping_add((la.bit_offset / 8) as usize).cast(),
        )
    };
    if rc != 0 {
        return Err(Miss::Fault);
    }
    Ok((raw[0], raw[1]))
}

/// The socket's inode number: beside the `struct socket` when BTF says where
/// (`socket_alloc`, the kernel's `SOCK_INODE()`), one read; else through `file`, two.
#[inline(always)]
fn inode(rec: &mut BindRecord, socket: *const u8, file: Option<*const u8>, c: &Config) {
    let (lost, bit) = (&mut rec.unreadable, unreadable::INODE);
    let ino = if cfg(&c.socket_ino).is_known() {
        note(field(socket, &c.socket_ino), lost, bit)
    } else {
        file.and_then(|f| note(pointer(f, &c.file_inode), lost, bit))
            .and_then(|i| note(field(i, &c.inode_ino), lost, bit))
    };
    if let Some(ino) = ino {
        rec.ino = ino;
        rec.sock_known |= known::INODE;
    }
}

/// From a `struct socket`: its inode, then the socket fields.
#[inline(always)]
pub(crate) fn from_socket(rec: &mut BindRecord, socket: *const u8, c: &Config) {
    let Some(sk) = note(
        pointer(socket, &c.socket_sk),
        &mut rec.unreadable,
        unreadable::SOCKET,
    ) else {
        return;
    };
    let file = if cfg(&c.socket_ino).is_known() {
        None
    } else {
        note(
            pointer(socket, &c.socket_file),
            &mut rec.unreadable,
            unreadable::INODE,
        )
    };
    inode(rec, socket, file, c);
    sock_fields(rec, sk, c);
}

/// From a `struct sock`: up to its `struct socket` and file when BTF says how, else the
/// `struct sock` fields alone.
#[inline(always)]
pub(crate) fn from_sk(rec: &mut BindRecord, sk: *const u8, c: &Config) {
    match pointer(sk, &c.sk_socket) {
        Ok(socket) => from_socket(rec, socket, c),
        // Its inode is then out of reach.
        Err(Miss::Fault) => {
            rec.unreadable |= unreadable::INODE;
            sock_fields(rec, sk, c)
        }
        Err(Miss::Unknown) => sock_fields(rec, sk, c),
    }
}

/// Copies of the stretches of a `struct sock` that hold the fields the programs read
/// (`Config::sk_spans`), each taken with one read, so that each field after it is a plain
/// load rather than a helper call.
struct Window<'c> {
    sk: *const u8,
    /// The config whose `sk_spans` were copied.
    c: &'c Config,
    /// This CPU's scratch buffer, held for the life of the window (none: another program
    /// on this CPU holds it, and every field is read on its own); stretch `k` is copied to
    /// `k * SLOT`.
    scratch: Option<Taken>,
    /// The buffer's address (null without `scratch`).
    copy: *const u8,
    /// Bit `k` set: stretch `k` was copied.
    copied: u32,
}

/// Room per stretch in the scratch buffer: twice `SPAN_MAX`, so a load of up to 16 bytes at
/// any masked offset into a stretch stays inside its room.
const SLOT: usize = 2 * SPAN_MAX as usize;

impl<'c> Window<'c> {
    #[inline(always)]
    fn take(sk: *const u8, c: &'c Config) -> Window<'c> {
        let mut window = Window {
            sk,
            c,
            scratch: Taken::take(),
            copy: core::ptr::null(),
            copied: 0,
        };
        let Some(copy) = window.scratch.as_ref().map(Taken::buf) else {
            return window;
        };
        window.copy = copy as *const u8;
        let mut k = 0;
        while k < SK_SPANS {
            let span = cfg(&c.sk_spans[k]);
            if span.len != 0 && span.len <= SPAN_MAX {
                // SAFETY: the helper validates the kernel address and fails instead of
                // faulting; `len` is at most `SPAN_MAX`, within stretch `k`'s room of the
                // buffer this window holds (no other program writes it meanwhile).
                let rc = unsafe {
                    generated::bpf_probe_read_kernel(
                        copy.wrapping_add(k * SLOT).cast(),
                        span.len,
                        sk.wrapping_add(span.offset as usize).cast(),
                    )
                };
                if rc == 0 {
                    window.copied |= 1 << k;
                }
            }
            k += 1;
        }
        window
    }

    /// Where the bytes `start..end` of the socket are in the copy, if a stretch holds them.
    #[inline(always)]
    fn locate(&self, start: u32, end: u32) -> Option<usize> {
        let mut k = 0;
        while k < SK_SPANS {
            let span = cfg(&self.c.sk_spans[k]);
            if self.copied & (1 << k) != 0 && span.holds(start, end) {
                return Some(k * SLOT + ((start - span.offset) & (SPAN_MAX - 1)) as usize);
            }
            k += 1;
        }
        None
    }

    /// `field()`, from the copy when a stretch holds the field.
    #[inline(always)]
    fn field(&self, loc: &FieldLoc) -> Result<u64, Miss> {
        let l = cfg(loc);
        let start = l.bit_offset / 8;
        let shift = l.bit_offset & 7;
        let end = start + (shift + l.bit_size).div_ceil(8);
        if l.bit_size == 0 || l.bit_size > 64 {
            return field(self.sk, loc);
        }
        let Some(off) = self.locate(start, end) else {
            return field(self.sk, loc);
        };
        // SAFETY: `off` is inside the room of a copied stretch, `SLOT` bytes, less
        // `SPAN_MAX`, so the 8-byte load stays inside the scratch buffer, which this window
        // holds (`scratch`: no other program has written it since the copy); bytes past the
        // field are masked off below.
        let raw = unsafe { core::ptr::read_unaligned(self.copy.add(off).cast::<u64>()) };
        Ok(bits(raw, shift, l.bit_size))
    }

    /// `read_bytes()`, from the copy when a stretch holds the field.
    #[inline(always)]
    fn bytes<const N: usize>(&self, loc: &FieldLoc) -> Result<[u8; N], Miss> {
        let l = cfg(loc);
        let start = l.bit_offset / 8;
        if l.bit_size as usize != N * 8 || l.bit_offset & 7 != 0 {
            return read_bytes::<N>(self.sk, loc);
        }
        let Some(off) = self.locate(start, start + N as u32) else {
            return read_bytes::<N>(self.sk, loc);
        };
        let mut out = [0u8; N];
        let mut i = 0;
        while i < N {
            // SAFETY: the mask keeps the index inside the `SCRATCH_LEN`-byte buffer (and, as
            // `off + i` is inside the stretch's room, never changes it); the window holds the
            // buffer, as in `field`.
            out[i] = unsafe { *self.copy.add((off + i) & (SCRATCH_LEN - 1)) };
            i += 1;
        }
        Ok(out)
    }
}

/// Fills the `struct sock` fields of `rec` (everything but the inode), picking them out of one
/// copy of the socket where they lie inside it.
#[inline(always)]
fn sock_fields(rec: &mut BindRecord, sk: *const u8, c: &Config) {
    rec.sock_known |= known::SOCK;
    let w = Window::take(sk, c);
    let mut lost = 0;
    if let Some(family) = note(w.field(&c.sk_family), &mut lost, unreadable::FAMILY) {
        rec.sock_family = family as u16;
        rec.sock_known |= known::FAMILY;
    }
    if let Some(port) = note(w.field(&c.sk_num), &mut lost, unreadable::BOUND) {
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
        if let Some(addr) = note(addr, &mut lost, unreadable::BOUND) {
            rec.bound_addr = addr;
            rec.sock_known |= known::BOUND;
        }
    }
    if let Some(dev) = note(w.field(&c.sk_bound_dev_if), &mut lost, unreadable::DEV_IF) {
        rec.bound_dev_if = dev as u32;
        rec.sock_known |= known::DEV_IF;
    }
    let net = match w.field(&c.sk_net) {
        Ok(0) => Err(Miss::Fault),
        Ok(p) => Ok(p as *const u8),
        Err(m) => Err(m),
    };
    if let Some(inum) = note(net, &mut lost, unreadable::NETNS)
        .and_then(|net| note(field(net, &c.net_inum), &mut lost, unreadable::NETNS))
    {
        rec.netns = inum as u32;
        rec.sock_known |= known::NETNS;
    }
    let proto = note(w.field(&c.sk_protocol), &mut lost, unreadable::PROTOCOL);
    let ty = note(w.field(&c.sk_type), &mut lost, unreadable::PROTOCOL);
    if let (Some(proto), Some(ty)) = (proto, ty) {
        rec.protocol = proto as u16;
        rec.sock_type = ty as u16;
        rec.sock_known |= known::PROTOCOL;
    }
    if let Some(uid) = note(w.field(&c.sk_uid), &mut lost, unreadable::SK_UID) {
        rec.sk_uid = uid as u32;
        rec.sock_known |= known::SK_UID;
    }
    let mut i = 0;
    while i < FLAG_COUNT {
        let bit = unreadable::flag(1 << i);
        if let Some(value) = note(w.field(&c.flag_locs[i]), &mut lost, bit) {
            rec.flags_known |= 1 << i;
            if value != 0 {
                rec.flags |= 1 << i;
            }
        }
        i += 1;
    }
    rec.flags &= flag::ALL;
    rec.unreadable |= lost;
}

/// Copies `N` bytes of a byte-aligned field (an address).
#[inline(always)]
fn read_bytes<const N: usize>(base: *const u8, loc: &FieldLoc) -> Result<[u8; N], Miss> {
    let loc = cfg(loc);
    if loc.bit_size as usize != N * 8 || loc.bit_offset & 7 != 0 {
        return Err(Miss::Unknown);
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
        return Err(Miss::Fault);
    }
    Ok(out)
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
