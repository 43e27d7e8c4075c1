//! Wire types shared by the kernel programs and the collector.
//!
//! Everything here crosses the user/kernel boundary as raw bytes, so every type is `#[repr(C)]`,
//! made of fixed-size integers and byte arrays, and starts with a type tag. Flags are integers
//! with named bits, never Rust enums, so that an unknown value from a newer program decodes as a
//! number instead of being undefined behaviour.
#![no_std]

/// Type tag of [`BindRecord`].
pub const RECORD_BIND: u32 = 1;
/// Type tag of [`RepeatRecord`].
pub const RECORD_REPEAT: u32 = 2;

/// `BindRecord::op`: the `bind()` system call.
pub const OP_BIND: u16 = 1;
/// `BindRecord::op`: the `listen()` system call.
pub const OP_LISTEN: u16 = 2;

/// `BindRecord::hook`: `syscalls:sys_exit_bind` (arguments from the task's saved registers).
pub const HOOK_TP_SYS_EXIT_BIND: u16 = 1;
/// `BindRecord::hook`: `syscalls:sys_exit_listen` (arguments from the task's saved registers).
pub const HOOK_TP_SYS_EXIT_LISTEN: u16 = 2;

/// `BindRecord::op`: a port allocation (`inet_csk_get_port` / `udp_lib_get_port`), inside a
/// `bind()` or `listen()` (same `call_id`) or on its own (e.g. a UDP autobind).
pub const OP_GET_PORT: u16 = 3;

/// `BindRecord::hook`: fexit on `inet_bind`.
pub const HOOK_FEXIT_INET_BIND: u16 = 3;
/// `BindRecord::hook`: fexit on `inet6_bind`.
pub const HOOK_FEXIT_INET6_BIND: u16 = 4;
/// `BindRecord::hook`: fexit on `inet_listen`.
pub const HOOK_FEXIT_INET_LISTEN: u16 = 5;
/// `BindRecord::hook`: fexit on `inet_csk_get_port` (TCP port allocation).
pub const HOOK_FEXIT_INET_CSK_GET_PORT: u16 = 6;
/// `BindRecord::hook`: fexit on `udp_lib_get_port` (UDP port allocation).
pub const HOOK_FEXIT_UDP_LIB_GET_PORT: u16 = 7;
/// `BindRecord::hook`: kretprobe on `inet_bind` (paired with its kprobe).
pub const HOOK_KRETPROBE_INET_BIND: u16 = 8;
/// `BindRecord::hook`: kretprobe on `inet6_bind`.
pub const HOOK_KRETPROBE_INET6_BIND: u16 = 9;
/// `BindRecord::hook`: kretprobe on `inet_listen`.
pub const HOOK_KRETPROBE_INET_LISTEN: u16 = 10;
/// `BindRecord::hook`: kretprobe on `inet_csk_get_port`.
pub const HOOK_KRETPROBE_INET_CSK_GET_PORT: u16 = 11;
/// `BindRecord::hook`: kretprobe on `udp_lib_get_port`.
pub const HOOK_KRETPROBE_UDP_LIB_GET_PORT: u16 = 12;
/// `BindRecord::op`: the `connect()` system call. The caller's sockaddr (the remote address
/// and port) is in `sockaddr`, `bound_*` is the local address and port the socket holds after
/// the call.
pub const OP_CONNECT: u16 = 4;
/// `BindRecord::hook`: `syscalls:sys_exit_connect` (arguments from the task's saved registers;
/// attached by every backend).
pub const HOOK_TP_SYS_EXIT_CONNECT: u16 = 13;
/// Number of hook ids (one past the largest): the size of the `FIRED` counters.
pub const HOOK_COUNT: u32 = 14;

/// Socket option bits in `BindRecord::flags` / `BindRecord::flags_known`.
pub mod flag {
    /// `SO_REUSEADDR` (`sk_reuse != SK_NO_REUSE`).
    pub const REUSEADDR: u32 = 1 << 0;
    /// `SO_REUSEPORT`.
    pub const REUSEPORT: u32 = 1 << 1;
    /// `IPV6_V6ONLY`.
    pub const V6ONLY: u32 = 1 << 2;
    /// `IP_FREEBIND` / `IPV6_FREEBIND`.
    pub const FREEBIND: u32 = 1 << 3;
    /// `IP_TRANSPARENT`.
    pub const TRANSPARENT: u32 = 1 << 4;
    /// `IP_BIND_ADDRESS_NO_PORT`.
    pub const BIND_ADDRESS_NO_PORT: u32 = 1 << 5;
    /// Every bit above.
    pub const ALL: u32 = (1 << 6) - 1;
}

/// The socket options the observer reports, declared once: every other place that names an
/// option (the BTF lookup of its kernel field, the event's JSON key, the table letter, the
/// workload's `setsockopt`, the holders' `getsockopt`) takes it from [`sockopt::ALL`]. Not
/// wire data: nothing here crosses the user/kernel boundary but the bit.
pub mod sockopt {
    /// Where the kernel keeps an option's value, for the BTF lookup that finds it.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum KernelField {
        /// A member of `struct sock`, by path (e.g. `__sk_common.skc_reuse`).
        Sock(&'static str),
        /// An `inet_sock` option: bit `enumerator` of `inet_sock.inet_flags` (6.6 and later),
        /// else the one-bit member `bitfield` of `inet_sock`.
        InetFlag {
            enumerator: &'static str,
            bitfield: &'static str,
        },
    }

    /// One socket option.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct SockOpt {
        /// Its bit in [`super::flag`] (`BindRecord::flags`).
        pub bit: u32,
        /// The option's name as `setsockopt(2)` documents it, e.g. `"SO_REUSEADDR"`.
        pub name: &'static str,
        /// The key events report it under in JSON, e.g. `"reuseaddr"`.
        pub key: &'static str,
        /// Its letter in the table's `OPTS` column (`.` when clear, `?` when unknown).
        pub letter: u8,
        /// `setsockopt` level and name on an `AF_INET` socket (Linux UAPI numbers).
        pub v4: (i32, i32),
        /// `setsockopt` level and name on an `AF_INET6` socket.
        pub v6: (i32, i32),
        /// Where the kernel keeps it.
        pub field: KernelField,
        /// What it does, in one line (README, `--help`).
        pub about: &'static str,
    }

    // Linux UAPI numbers (`asm-generic/socket.h`, `linux/in.h`, `linux/in6.h`); the collector's
    // tests check them against libc.
    const SOL_SOCKET: i32 = 1;
    const IPPROTO_IP: i32 = 0;
    const IPPROTO_IPV6: i32 = 41;

    /// Every option, in bit order.
    pub const ALL: [SockOpt; super::FLAG_COUNT] = [
        SockOpt {
            bit: super::flag::REUSEADDR,
            name: "SO_REUSEADDR",
            key: "reuseaddr",
            letter: b'R',
            v4: (SOL_SOCKET, 2),
            v6: (SOL_SOCKET, 2),
            field: KernelField::Sock("__sk_common.skc_reuse"),
            about: "share the port with sockets that also have it, unless one listens (TCP)",
        },
        SockOpt {
            bit: super::flag::REUSEPORT,
            name: "SO_REUSEPORT",
            key: "reuseport",
            letter: b'r',
            v4: (SOL_SOCKET, 15),
            v6: (SOL_SOCKET, 15),
            field: KernelField::Sock("__sk_common.skc_reuseport"),
            about: "share the port with sockets of the same owner uid that also have it",
        },
        SockOpt {
            bit: super::flag::V6ONLY,
            name: "IPV6_V6ONLY",
            key: "v6only",
            letter: b'6',
            v4: (IPPROTO_IPV6, 26),
            v6: (IPPROTO_IPV6, 26),
            field: KernelField::Sock("__sk_common.skc_ipv6only"),
            about: "an IPv6 socket that does not also cover IPv4",
        },
        SockOpt {
            bit: super::flag::FREEBIND,
            name: "IP_FREEBIND",
            key: "freebind",
            letter: b'F',
            v4: (IPPROTO_IP, 15),
            v6: (IPPROTO_IPV6, 78),
            field: KernelField::InetFlag {
                enumerator: "INET_FLAGS_FREEBIND",
                bitfield: "freebind",
            },
            about: "bind to an address that is not (yet) local",
        },
        SockOpt {
            bit: super::flag::TRANSPARENT,
            name: "IP_TRANSPARENT",
            key: "transparent",
            letter: b'T',
            v4: (IPPROTO_IP, 19),
            v6: (IPPROTO_IP, 19),
            field: KernelField::InetFlag {
                enumerator: "INET_FLAGS_TRANSPARENT",
                bitfield: "transparent",
            },
            about: "bind to any address, for transparent proxying (needs CAP_NET_ADMIN or CAP_NET_RAW)",
        },
        SockOpt {
            bit: super::flag::BIND_ADDRESS_NO_PORT,
            name: "IP_BIND_ADDRESS_NO_PORT",
            key: "bind_address_no_port",
            letter: b'N',
            v4: (IPPROTO_IP, 24),
            v6: (IPPROTO_IP, 24),
            field: KernelField::InetFlag {
                enumerator: "INET_FLAGS_BIND_ADDRESS_NO_PORT",
                bitfield: "bind_address_no_port",
            },
            about: "bind the address now and choose the port at connect()",
        },
    ];
}

/// Which socket fields of a `BindRecord` the program could read (`BindRecord::sock_known`).
pub mod known {
    /// The fd resolved to a socket and `sock` was reachable: the fields below are meaningful.
    pub const SOCK: u32 = 1 << 0;
    /// `bound_addr` / `bound_port`.
    pub const BOUND: u32 = 1 << 1;
    /// `protocol` and `sock_type`.
    pub const PROTOCOL: u32 = 1 << 2;
    /// `sk_uid`.
    pub const SK_UID: u32 = 1 << 3;
    /// `netns`.
    pub const NETNS: u32 = 1 << 4;
    /// `ino`.
    pub const INODE: u32 = 1 << 5;
    /// `bound_dev_if`.
    pub const DEV_IF: u32 = 1 << 6;
    /// `sock_family`.
    pub const FAMILY: u32 = 1 << 7;
    /// `fd`: always valid for the tracepoint hooks; a kernel-function hook sets it when the
    /// call came from the `bind()`/`listen()` system call (not from io_uring or the kernel).
    pub const FD: u32 = 1 << 8;
}

/// Which fields of a `BindRecord` the program tried to read and could not (the kernel memory
/// read failed), as opposed to fields this kernel does not have (those are reported once, in
/// the start record) or that do not apply (a `listen()` has no sockaddr). A field with its bit
/// here is zero in the record and `null` in the event, which names it in `unreadable`.
pub mod unreadable {
    /// The caller's sockaddr (`sockaddr`): the copy from the caller's memory (tracepoint) or
    /// from the kernel's copy (kernel-function hooks) failed.
    pub const REQUESTED: u32 = 1 << 0;
    /// The walk from the fd (or the `struct socket`) to the `struct sock` failed: every socket
    /// field is unknown.
    pub const SOCKET: u32 = 1 << 1;
    /// `sock_family`.
    pub const FAMILY: u32 = 1 << 2;
    /// `bound_port` / `bound_addr`.
    pub const BOUND: u32 = 1 << 3;
    /// `protocol` / `sock_type`.
    pub const PROTOCOL: u32 = 1 << 4;
    /// `sk_uid`.
    pub const SK_UID: u32 = 1 << 5;
    /// `netns`.
    pub const NETNS: u32 = 1 << 6;
    /// `ino`.
    pub const INODE: u32 = 1 << 7;
    /// `bound_dev_if`.
    pub const DEV_IF: u32 = 1 << 8;
    /// Where the socket options start: option bit `flag::X` is `flag::X << FLAGS_SHIFT`.
    pub const FLAGS_SHIFT: u32 = 16;

    /// The bit of the option `flag_bit` (a [`super::flag`] bit).
    pub const fn flag(flag_bit: u32) -> u32 {
        flag_bit << FLAGS_SHIFT
    }
}

/// `sizeof(struct sockaddr_storage)`: `bind()` refuses a longer (or negative) address length
/// with EINVAL before it reads the address (`move_addr_to_kernel`).
pub const SOCKADDR_STORAGE_LEN: u32 = 128;

/// Size of the copy of the caller's `sockaddr` (large enough for `sockaddr_in6`).
pub const SOCKADDR_LEN: usize = 28;
/// Size of `comm` (the kernel's `TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;

/// One `bind()` or `listen()` attempt, as the kernel programs report it through the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindRecord {
    /// Always [`RECORD_BIND`].
    pub kind: u32,
    /// Which call: [`OP_BIND`], [`OP_LISTEN`], [`OP_GET_PORT`] or [`OP_CONNECT`].
    pub op: u16,
    /// Which kernel hook produced the record: `HOOK_*`.
    pub hook: u16,
    /// `CLOCK_MONOTONIC` time of the call's return, in nanoseconds (`bpf_ktime_get_ns`).
    pub ts_ns: u64,
    /// Thread group id (the user-visible pid) of the caller.
    pub pid: u32,
    /// Thread id of the caller.
    pub tid: u32,
    /// Real uid of the caller (init user namespace).
    pub uid: u32,
    /// Owner uid of the socket (`sk->sk_uid`), valid when `sock_known` has [`known::SK_UID`].
    pub sk_uid: u32,
    /// Return value of the call: 0 on success, a negative errno on failure.
    pub ret: i32,
    /// File descriptor the call named.
    pub fd: i32,
    /// `addrlen` argument of `bind()` (0 for `listen()`), as the caller passed it: the kernel
    /// takes it as an `int`, so a negative length arrives here as a large number.
    pub addrlen: u32,
    /// Inode number of the socket's network namespace, when `sock_known` has [`known::NETNS`].
    pub netns: u32,
    /// Inode number of the socket, when `sock_known` has [`known::INODE`].
    pub ino: u64,
    /// Bits of [`flag`] that are set on the socket after the call.
    pub flags: u32,
    /// Bits of [`flag`] the program could read on this kernel; a clear bit means "unknown".
    pub flags_known: u32,
    /// Bits of [`known`] saying which socket fields below are valid.
    pub sock_known: u32,
    /// `sk->sk_bound_dev_if` (0 when not bound to a device).
    pub bound_dev_if: u32,
    /// `sk->sk_family` (`AF_INET` = 2, `AF_INET6` = 10, others possible).
    pub sock_family: u16,
    /// `sk->sk_protocol` (`IPPROTO_TCP` = 6, `IPPROTO_UDP` = 17, ...).
    pub protocol: u16,
    /// `sk->sk_type` (`SOCK_STREAM` = 1, `SOCK_DGRAM` = 2, ...).
    pub sock_type: u16,
    /// `sk->sk_num`: the local port the socket holds, host byte order (0 = none).
    pub bound_port: u16,
    /// Local address the socket holds: IPv4 in the first 4 bytes for `AF_INET`, IPv6 for `AF_INET6`.
    pub bound_addr: [u8; 16],
    /// Bytes copied from the caller's `sockaddr` (only the first `sockaddr_len` are valid).
    pub sockaddr: [u8; SOCKADDR_LEN],
    /// How many bytes of `sockaddr` were copied: `min(addrlen, 28)`; 0 for `listen()`, when
    /// `addrlen` is one the kernel refuses before it reads the address (negative, or over
    /// [`SOCKADDR_STORAGE_LEN`]), or when the copy failed ([`unreadable::REQUESTED`]).
    pub sockaddr_len: u32,
    /// The caller's `comm`, NUL-padded.
    pub comm: [u8; COMM_LEN],
    /// One user action: a port allocation and the `bind()`/`listen()` it happened inside share
    /// it (kernel-function hooks). Unique per thread; 0 from programs that do not set it.
    pub call_id: u64,
    /// For [`OP_GET_PORT`]: the port asked for (host order, 0 = pick an ephemeral one).
    pub snum: u16,
    /// Padding, always zero.
    pub _pad: u16,
    /// Bits of [`unreadable`]: fields the program could not read (0: every field it tried).
    pub unreadable: u32,
    /// The caller's cgroup v2 id (`bpf_get_current_cgroup_id`: the inode number of its cgroup
    /// directory); 0 when the kernel gave none.
    pub cgroup_id: u64,
}

/// Size of [`BindRecord`] on the wire.
pub const BIND_RECORD_SIZE: usize = core::mem::size_of::<BindRecord>();

/// Folded repeats of a failed call (see [`RunSlot`]): `count` more calls, identical to the
/// event the thread's run started with, made since the previous report of that run. Sent by
/// the thread's own program when its run ends (it makes another call); the collector reads the
/// tail of a run that is still going or has stopped from `RUNS` itself, every tick.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RepeatRecord {
    /// Always [`RECORD_REPEAT`].
    pub kind: u32,
    /// Why it was sent: `REPEAT_*`.
    pub reason: u32,
    /// Thread group id of the caller.
    pub pid: u32,
    /// Thread id of the caller.
    pub tid: u32,
    /// The run: [`run_tag`] of the `ts_ns` of the event it repeats.
    pub run: u32,
    /// Padding, always zero.
    pub _pad: u32,
    /// Calls folded into this record.
    pub count: u64,
    /// `CLOCK_MONOTONIC` time of the last of them (`bpf_ktime_get_ns`).
    pub last_ns: u64,
}

/// Size of [`RepeatRecord`] on the wire.
pub const REPEAT_RECORD_SIZE: usize = core::mem::size_of::<RepeatRecord>();

/// `RepeatRecord::reason`: the thread made a different call (or the same one after the
/// window): the run is over and this is its last count.
pub const REPEAT_ENDED: u32 = 1;
/// `RepeatRecord::reason` (collector only): the count so far, taken by the collector's tick.
pub const REPEAT_TICK: u32 = 2;

/// A repeat is folded only within this long of the previous call of its run.
pub const FOLD_WINDOW_NS: u64 = 1_000_000_000;

/// Number of [`RunSlot`]s (a power of two): thread `tid` uses slot `tid & (RUN_SLOTS - 1)`.
pub const RUN_SLOTS: u32 = 4096;

/// The run identity carried by a [`RepeatRecord`]: 32 bits of the timestamp of the event it
/// repeats, at 16 ns (they wrap after 68 s; two runs of one thread are never that close).
pub const fn run_tag(ts_ns: u64) -> u32 {
    (ts_ns >> 4) as u32
}

/// `RunSlot::word`: the run's tag in the high half, its unreported count in the low half, so
/// that the thread's program (atomic add, exchange) and the collector (compare-and-swap on the
/// mapped array) take a count and its run in one atomic operation.
pub const RUN_COUNT_MASK: u64 = 0xffff_ffff;

/// One thread's run of identical failed calls, in the memory-mappable `RUNS` array. Written
/// by the thread's own program; `word` is also changed by the collector, atomically.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunSlot {
    /// See [`RUN_COUNT_MASK`].
    pub word: u64,
    /// Time of the run's last call.
    pub last_ns: u64,
    /// The thread that owns the slot (0: none yet).
    pub tid: u32,
    /// Its thread group id.
    pub pid: u32,
    /// The identity of the call: `op | hook << 16`, 0 when no run is open.
    pub op_hook: u32,
    /// Its result (a negative errno).
    pub ret: i32,
    /// Its fd.
    pub fd: i32,
    /// Its `addrlen`.
    pub addrlen: u32,
    /// How many bytes of `sockaddr` were copied.
    pub sockaddr_len: u32,
    /// Its requested address, as copied from the caller.
    pub sockaddr: [u8; SOCKADDR_LEN],
}

/// Where one field lives, relative to the start of the struct it belongs to, as found in the
/// running kernel's BTF at start-up. Bit-granular so that one reader serves plain members,
/// bitfields and single bits of a flags word alike.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FieldLoc {
    /// Offset of the field in bits.
    pub bit_offset: u32,
    /// Width of the field in bits (1 to 64); 0 means "not found on this kernel".
    pub bit_size: u32,
}

impl FieldLoc {
    /// A field the kernel does not have (or BTF did not describe).
    pub const MISSING: FieldLoc = FieldLoc {
        bit_offset: 0,
        bit_size: 0,
    };

    /// True when the field was found.
    pub const fn is_known(&self) -> bool {
        self.bit_size != 0
    }
}

/// Everything the kernel programs need to know about the running kernel and the collector,
/// written into their read-only data before load.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Type tag: [`CONFIG_VERSION`], so a program never runs with a config it does not understand.
    pub version: u32,
    /// Thread group id of the collector in the initial pid namespace (the number
    /// `bpf_get_current_pid_tgid` gives): its own calls are not reported. 0 when the collector
    /// runs in another pid namespace (a container without the host's pids), where its own
    /// `getpid()` is another number; `collector_pidns_ino` then identifies it.
    pub collector_tgid: u32,
    /// With `collector_tgid` 0: the device of the collector's pid namespace file
    /// (`stat /proc/self/ns/pid`), as the kernel numbers devices (`MKDEV`: major << 20 |
    /// minor), for `bpf_get_ns_current_pid_tgid`.
    pub collector_pidns_dev: u32,
    /// With `collector_tgid` 0: the inode of the collector's pid namespace (0: none, nothing
    /// is skipped).
    pub collector_pidns_ino: u32,
    /// With `collector_tgid` 0: the collector's tgid inside its own pid namespace
    /// (`getpid()`).
    pub collector_ns_tgid: u32,
    /// Byte offset of `ret` in a `syscalls:sys_exit_*` record (from tracefs).
    pub exit_ret_off: u32,
    /// `task_struct.files`.
    pub task_files: FieldLoc,
    /// `files_struct.fdt`.
    pub files_fdt: FieldLoc,
    /// `fdtable.max_fds`.
    pub fdt_max_fds: FieldLoc,
    /// `fdtable.fd`.
    pub fdt_fd: FieldLoc,
    /// `file.private_data` (a `struct socket *` for a socket file).
    pub file_private_data: FieldLoc,
    /// `file.f_inode`.
    pub file_inode: FieldLoc,
    /// `inode.i_ino`.
    pub inode_ino: FieldLoc,
    /// `inode.i_mode` (`S_IFSOCK` marks a socket's inode): read by `iter/task_file`.
    pub inode_mode: FieldLoc,
    /// `task_struct.tgid` (the process id in the initial pid namespace): read by
    /// `iter/task_file`.
    pub task_tgid: FieldLoc,
    /// `task_struct.nsproxy` (NULL once the task is exiting): read by `iter/task`.
    pub task_nsproxy: FieldLoc,
    /// `nsproxy.net_ns`: read by `iter/task`.
    pub nsproxy_net_ns: FieldLoc,
    /// The file's reference count: `file.f_count` before 6.13, `file.f_ref.refcnt` since
    /// (which counts from 0 for one reference); read by `iter/task_file`.
    pub file_refs: FieldLoc,
    /// What to add to `file_refs` to get the number of references: 0 for `f_count`, 1 for
    /// `f_ref`.
    pub file_refs_bias: u32,
    /// `socket.file` (back pointer, checked so a non-socket file is never taken for one).
    pub socket_file: FieldLoc,
    /// `socket.sk`.
    pub socket_sk: FieldLoc,
    /// `socket_alloc.vfs_inode.i_ino`, relative to the `struct socket` at the start of its
    /// `socket_alloc` (the kernel's `SOCK_INODE()`): the socket's inode number in one read.
    /// Unknown when BTF has no `socket_alloc`; the inode is then read through the file.
    pub socket_ino: FieldLoc,
    /// `sock.__sk_common.skc_family`.
    pub sk_family: FieldLoc,
    /// `sock.__sk_common.skc_num`.
    pub sk_num: FieldLoc,
    /// `sock.__sk_common.skc_rcv_saddr`.
    pub sk_rcv_saddr: FieldLoc,
    /// `sock.__sk_common.skc_v6_rcv_saddr`.
    pub sk_v6_rcv_saddr: FieldLoc,
    /// `sock.__sk_common.skc_bound_dev_if`.
    pub sk_bound_dev_if: FieldLoc,
    /// `sock.__sk_common.skc_net` (a `struct net *`).
    pub sk_net: FieldLoc,
    /// `net.ns.inum`.
    pub net_inum: FieldLoc,
    /// `sock.sk_protocol`.
    pub sk_protocol: FieldLoc,
    /// `sock.sk_type`.
    pub sk_type: FieldLoc,
    /// `sock.sk_uid`.
    pub sk_uid: FieldLoc,
    /// One location per bit of [`flag`], in bit order (`REUSEADDR` first), relative to `struct sock`.
    pub flag_locs: [FieldLoc; FLAG_COUNT],
    /// `sock.sk_socket` (from a `struct sock` back to its `struct socket`).
    pub sk_socket: FieldLoc,
    /// `pt_regs.orig_ax` (x86_64): the system call number of the task's user registers.
    pub regs_syscall_nr: FieldLoc,
    /// `pt_regs.di` (x86_64): the first system call argument (the fd of `bind`/`listen`).
    pub regs_arg0: FieldLoc,
    /// `pt_regs.si` (x86_64): the second system call argument (`bind`'s `umyaddr`).
    pub regs_arg1: FieldLoc,
    /// `pt_regs.dx` (x86_64): the third system call argument (`bind`'s `addrlen`).
    pub regs_arg2: FieldLoc,
    /// Stretches of `struct sock` (offsets relative to it) that the programs copy, one read
    /// each, before picking the socket fields out of the copies: one read per stretch instead
    /// of one per field, without copying the hundreds of bytes between the stretches. A field
    /// outside every stretch is read on its own. Unused stretches have `len` 0.
    pub sk_spans: [Span; SK_SPANS],
    /// The `bind` system call number on this architecture.
    pub nr_bind: u32,
    /// The `listen` system call number on this architecture.
    pub nr_listen: u32,
    /// Non-zero: `sys_exit_connect` records every `connect()`, and the kernel-function
    /// backends report the UDP autobinds of `connect()`/`sendto()`/`sendmsg()`/`sendmmsg()`
    /// (`--connects all`); 0: only connects that fail with EADDRNOTAVAIL, EAGAIN or
    /// EADDRINUSE.
    pub connects_all: u32,
    /// The `connect`, `sendto`, `sendmsg` and `sendmmsg` system call numbers: a port
    /// allocation inside one of them is an implicit one (reported only with `connects_all`).
    pub nr_implicit: [u32; 4],
}

impl Config {
    /// An all-zero config: what the programs see when the collector did not fill it in (every
    /// field unknown, and `version` 0 so the programs report nothing).
    pub const ZEROED: Config = Config {
        version: 0,
        collector_tgid: 0,
        collector_pidns_dev: 0,
        collector_pidns_ino: 0,
        collector_ns_tgid: 0,
        exit_ret_off: 0,
        task_files: FieldLoc::MISSING,
        files_fdt: FieldLoc::MISSING,
        fdt_max_fds: FieldLoc::MISSING,
        fdt_fd: FieldLoc::MISSING,
        file_private_data: FieldLoc::MISSING,
        file_inode: FieldLoc::MISSING,
        inode_ino: FieldLoc::MISSING,
        inode_mode: FieldLoc::MISSING,
        task_tgid: FieldLoc::MISSING,
        task_nsproxy: FieldLoc::MISSING,
        nsproxy_net_ns: FieldLoc::MISSING,
        file_refs: FieldLoc::MISSING,
        file_refs_bias: 0,
        socket_file: FieldLoc::MISSING,
        socket_sk: FieldLoc::MISSING,
        socket_ino: FieldLoc::MISSING,
        sk_family: FieldLoc::MISSING,
        sk_num: FieldLoc::MISSING,
        sk_rcv_saddr: FieldLoc::MISSING,
        sk_v6_rcv_saddr: FieldLoc::MISSING,
        sk_bound_dev_if: FieldLoc::MISSING,
        sk_net: FieldLoc::MISSING,
        net_inum: FieldLoc::MISSING,
        sk_protocol: FieldLoc::MISSING,
        sk_type: FieldLoc::MISSING,
        sk_uid: FieldLoc::MISSING,
        flag_locs: [FieldLoc::MISSING; FLAG_COUNT],
        sk_socket: FieldLoc::MISSING,
        regs_syscall_nr: FieldLoc::MISSING,
        regs_arg0: FieldLoc::MISSING,
        regs_arg1: FieldLoc::MISSING,
        regs_arg2: FieldLoc::MISSING,
        sk_spans: [Span::EMPTY; SK_SPANS],
        nr_bind: 0,
        nr_listen: 0,
        connects_all: 0,
        nr_implicit: [0; 4],
    };
}

/// What the `iter/tcp` program writes per socket: the options of sockets no descriptor reaches
/// (TIME_WAIT), matched to sock_diag's records by socket cookie.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockFlagsRecord {
    /// `sock_gen_cookie()`, as sock_diag's `idiag_cookie`.
    pub cookie: u64,
    /// [`flag`] bits `REUSEADDR`, `REUSEPORT`, `V6ONLY`.
    pub flags: u32,
    /// Which of those bits could be read.
    pub known: u32,
}

/// What `iter/task_file` looks for, written to its one-entry `OWNER_QUERY` map before each
/// walk: the sockets of one network namespace bound to one port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OwnerQuery {
    /// `net.ns.inum` of the sockets' network namespace (0: the walk reports nothing).
    pub netns_ino: u32,
    /// The local port (`skc_num`, host order).
    pub port: u32,
}

/// What `iter/task_file` writes per descriptor that names a socket the [`OwnerQuery`] asks
/// for: who holds it and under which number.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OwnerRecord {
    /// The holding process (`task_struct.tgid`, initial pid namespace).
    pub tgid: u32,
    /// The descriptor number in that process.
    pub fd: u32,
    /// The socket's inode number (`socket:[N]` in `/proc/PID/fd`).
    pub ino: u64,
    /// References to the socket's file when this record was made, the iterator's own
    /// included (0: unknown). Each descriptor table entry holds one, so when a walk of some
    /// processes found one entry fewer than this, it found every holder.
    pub refs: u64,
    /// The socket's SO_REUSEADDR, SO_REUSEPORT and IPV6_V6ONLY ([`flag`] bits), read in the
    /// kernel from the socket the descriptor names, as [`SockFlagsRecord`] has them: the
    /// options of a socket the socket iterators do not list (bound, not listening).
    pub flags: u32,
    /// Which bits of `flags` could be read.
    pub known: u32,
}

/// One stretch of bytes of a kernel object (see [`Config::sk_spans`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    /// Offset of the first byte.
    pub offset: u32,
    /// Number of bytes, at most [`SPAN_MAX`] (0: unused).
    pub len: u32,
}

impl Span {
    /// An unused stretch.
    pub const EMPTY: Span = Span { offset: 0, len: 0 };

    /// True when the bytes `start..end` of the object lie inside this stretch.
    pub const fn holds(&self, start: u32, end: u32) -> bool {
        start >= self.offset && end <= self.offset + self.len
    }
}

/// Number of [`Config::sk_spans`]: the socket fields the programs read lie in three clusters
/// on the kernels seen so far (`sock_common`; `sk_uid`, `sk_protocol`, `sk_type`; the
/// `inet_sock` option bits).
pub const SK_SPANS: usize = 3;

/// Largest [`Span::len`]. A power of two, so the programs can bound offsets into their copy
/// with a mask.
pub const SPAN_MAX: u32 = 128;

/// Number of socket option bits in [`flag`].
pub const FLAG_COUNT: usize = 6;

/// Current [`Config::version`].
pub const CONFIG_VERSION: u32 = 8;

/// Index in the `COUNTERS` per-CPU array: records the ring buffer had no room for.
pub const COUNTER_LOST: u32 = 0;
/// Index in `COUNTERS`: exits with no matching entry (the entry happened before attach, or the
/// pairing map evicted it).
pub const COUNTER_UNPAIRED: u32 = 1;
// Index 2 of `COUNTERS` counted failed kernel reads; each record now says which of its fields
// could not be read (`BindRecord::unreadable`), and the index is unused.
/// Index in `COUNTERS`: entries that could not be stored in the pairing map.
pub const COUNTER_PAIR_FULL: u32 = 3;
/// Index in `COUNTERS`: calls of the collector's own process, recognised and not reported (the
/// collector's start-up check makes one and expects this to move).
pub const COUNTER_OWN_CALLS: u32 = 4;
/// Index in `COUNTERS`: folded calls whose repeat record the ring buffer had no room for.
pub const COUNTER_LOST_REPEATS: u32 = 5;
/// Index in `COUNTERS`: identical failed calls that were not folded because the thread's run
/// slot was held by another thread's run (sent as events, like every call without folding).
pub const COUNTER_FOLD_BUSY: u32 = 6;
/// Number of counters.
pub const COUNTER_COUNT: u32 = 7;

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain old data: `#[repr(C)]`, integers and arrays of integers only, and any bit
    // pattern is a valid value.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FieldLoc {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Span {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SockFlagsRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::OwnerQuery {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RunSlot {}
}
