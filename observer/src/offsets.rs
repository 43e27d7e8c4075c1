//! The kernel-specific half of the programs' `Config`: where each field the programs read lives
//! on the running kernel, found in its BTF.
//!
//! Two layouts of the `inet_sock` option bits exist: before 6.6 they are bitfields
//! (`inet_sock.freebind:1`, ...); since 6.6 they are bits of `inet_sock.inet_flags`, numbered by
//! the `INET_FLAGS_*` enumerators. Both resolve to a bit position relative to `struct sock`
//! (an `inet_sock` starts with its `struct sock`), so the programs need one reader for both.

use crate::btf::{Btf, BtfError, MemberLoc};
use observer_common::sockopt::{self, KernelField};
use observer_common::{CONFIG_VERSION, Config, FieldLoc, SK_SPANS, SPAN_MAX, Span};

/// The config, and the names of the fields that could not be resolved.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub config: Config,
    /// e.g. `"transparent (inet_sock.inet_flags / inet_sock.transparent)"`.
    pub unknown: Vec<String>,
}

/// Fields without which no event can name a socket: their absence is an error, not a gap.
const REQUIRED: [&str; 6] = [
    "task_struct.files",
    "files_struct.fdt",
    "fdtable.fd",
    "file.private_data",
    "socket.sk",
    "socket.file",
];

struct Resolver<'a> {
    btf: &'a Btf,
    unknown: Vec<String>,
}

impl Resolver<'_> {
    /// `root.path`, e.g. `"sock.__sk_common.skc_num"`.
    fn loc(&mut self, name: &str, what: &str) -> Result<FieldLoc, BtfError> {
        let (root, path) = name.split_once('.').unwrap_or((name, ""));
        match self.btf.member(root, path) {
            Ok(m) => Ok(to_loc(m)),
            Err(err @ (BtfError::Io { .. } | BtfError::Format(_))) => Err(err),
            Err(err) if REQUIRED.contains(&name) => Err(err),
            Err(_) => {
                self.unknown.push(format!("{what} ({name})"));
                Ok(FieldLoc::MISSING)
            }
        }
    }

    /// An `inet_sock` option bit: the 6.6+ flags word, else the old bitfield.
    fn inet_flag(
        &mut self,
        what: &str,
        enumerator: &str,
        bitfield: &str,
    ) -> Result<FieldLoc, BtfError> {
        if let (Ok(word), Ok(bit)) = (
            self.btf.member("inet_sock", "inet_flags"),
            self.btf.enum_value(enumerator),
        ) && let Ok(bit) = u32::try_from(bit)
            && bit < word.bit_size
        {
            return Ok(FieldLoc {
                bit_offset: word.bit_offset + bit,
                bit_size: 1,
            });
        }
        match self.btf.member("inet_sock", bitfield) {
            Ok(m) => Ok(to_loc(m)),
            Err(err @ (BtfError::Io { .. } | BtfError::Format(_))) => Err(err),
            Err(_) => {
                self.unknown.push(format!(
                    "{what} (inet_sock.inet_flags bit {enumerator} / inet_sock.{bitfield})"
                ));
                Ok(FieldLoc::MISSING)
            }
        }
    }
}

/// Every field the programs read from a `struct sock` (relative to it).
fn sock_fields(c: &Config) -> impl Iterator<Item = FieldLoc> {
    let named = [
        c.sk_family,
        c.sk_num,
        c.sk_rcv_saddr,
        c.sk_v6_rcv_saddr,
        c.sk_bound_dev_if,
        c.sk_net,
        c.sk_protocol,
        c.sk_type,
        c.sk_uid,
    ];
    named.into_iter().chain(c.flag_locs)
}

/// Two socket fields closer than this many bytes are copied in one stretch: a read is a helper
/// call, which costs about as much as copying 128 bytes (13 ns against 0.09 ns a byte, on
/// these VMs), so copying a small gap is cheaper than a second read.
const MERGE_GAP: u32 = 64;

/// The stretches of `struct sock` the programs copy: the bytes of the socket fields they read,
/// each field widened to whole words, merged where the gap between two is under `MERGE_GAP`
/// and the result fits `SPAN_MAX`. A field in no stretch (more clusters than `SK_SPANS`, or
/// wider than `SPAN_MAX`) is read on its own.
fn sk_spans(c: &Config) -> [Span; SK_SPANS] {
    let mut ranges: Vec<(u32, u32)> = sock_fields(c)
        .filter(|l| l.is_known())
        .map(|l| {
            let start = l.bit_offset / 64 * 8;
            (start, (l.bit_offset + l.bit_size).div_ceil(64) * 8)
        })
        .filter(|&(start, end)| end - start <= SPAN_MAX)
        .collect();
    ranges.sort_unstable();
    let mut spans: Vec<Span> = Vec::new();
    for (start, end) in ranges {
        if let Some(last) = spans.last_mut() {
            let last_end = last.offset + last.len;
            let merged = end.max(last_end) - last.offset;
            if start <= last_end + MERGE_GAP && merged <= SPAN_MAX {
                last.len = merged;
                continue;
            }
        }
        spans.push(Span {
            offset: start,
            len: end - start,
        });
    }
    let mut out = [Span::EMPTY; SK_SPANS];
    for (slot, span) in out.iter_mut().zip(spans) {
        *slot = span;
    }
    out
}

fn to_loc(m: MemberLoc) -> FieldLoc {
    FieldLoc {
        bit_offset: m.bit_offset,
        bit_size: m.bit_size,
    }
}

/// Resolves every field the programs read. Fails only when BTF is unreadable or a field the
/// socket walk cannot do without is missing.
pub fn resolve(btf: &Btf) -> Result<Resolved, BtfError> {
    let mut r = Resolver {
        btf,
        unknown: Vec::new(),
    };
    let mut c = Config {
        version: CONFIG_VERSION,
        ..Config::ZEROED
    };
    c.task_files = r.loc("task_struct.files", "fd table")?;
    c.files_fdt = r.loc("files_struct.fdt", "fd table")?;
    c.fdt_max_fds = r.loc("fdtable.max_fds", "fd table size")?;
    c.fdt_fd = r.loc("fdtable.fd", "fd table")?;
    c.file_private_data = r.loc("file.private_data", "socket")?;
    c.file_inode = r.loc("file.f_inode", "sock_ino")?;
    c.inode_ino = r.loc("inode.i_ino", "sock_ino")?;
    c.socket_file = r.loc("socket.file", "socket")?;
    c.socket_sk = r.loc("socket.sk", "socket")?;
    c.sk_family = r.loc("sock.__sk_common.skc_family", "family")?;
    c.sk_num = r.loc("sock.__sk_common.skc_num", "bound port")?;
    c.sk_rcv_saddr = r.loc("sock.__sk_common.skc_rcv_saddr", "bound address")?;
    c.sk_v6_rcv_saddr = r.loc("sock.__sk_common.skc_v6_rcv_saddr", "bound IPv6 address")?;
    c.sk_bound_dev_if = r.loc("sock.__sk_common.skc_bound_dev_if", "bound_dev_if")?;
    c.sk_net = r.loc("sock.__sk_common.skc_net", "netns")?;
    c.net_inum = r.loc("net.ns.inum", "netns")?;
    c.sk_protocol = r.loc("sock.sk_protocol", "protocol")?;
    c.sk_type = r.loc("sock.sk_type", "protocol")?;
    c.sk_uid = r.loc("sock.sk_uid", "sock_uid")?;
    for (loc, opt) in c.flag_locs.iter_mut().zip(&sockopt::ALL) {
        *loc = match opt.field {
            KernelField::Sock(member) => r.loc(&format!("sock.{member}"), opt.key)?,
            KernelField::InetFlag {
                enumerator,
                bitfield,
            } => r.inet_flag(opt.key, enumerator, bitfield)?,
        };
    }
    // Read only by the kernel-function backends; without them those backends report the
    // inode / fd as unknown, so they are not listed among the socket fields this kernel lacks.
    let quiet = |root: &str, path: &str| btf.member(root, path).map_or(FieldLoc::MISSING, to_loc);
    c.sk_socket = quiet("sock", "sk_socket");
    // A shortcut, so not listed either: the file's inode serves without it.
    c.socket_ino = match btf.member("socket_alloc", "socket") {
        Ok(m) if m.bit_offset == 0 => quiet("socket_alloc", "vfs_inode.i_ino"),
        _ => FieldLoc::MISSING,
    };
    // Read only by the owner search (`iter/task_file`), which falls back to `/proc` without
    // them.
    c.inode_mode = quiet("inode", "i_mode");
    c.task_tgid = quiet("task_struct", "tgid");
    c.task_nsproxy = quiet("task_struct", "nsproxy");
    c.nsproxy_net_ns = quiet("nsproxy", "net_ns");
    (c.file_refs, c.file_refs_bias) = match quiet("file", "f_ref.refcnt.counter") {
        loc if loc.is_known() => (loc, 1),
        _ => (quiet("file", "f_count.counter"), 0),
    };
    c.regs_syscall_nr = quiet("pt_regs", "orig_ax");
    c.regs_arg0 = quiet("pt_regs", "di");
    c.regs_arg1 = quiet("pt_regs", "si");
    c.regs_arg2 = quiet("pt_regs", "dx");
    c.sk_spans = sk_spans(&c);
    // A pointer the programs follow must be a whole, byte-aligned 64-bit word.
    for (name, loc) in [
        ("task_struct.files", c.task_files),
        ("files_struct.fdt", c.files_fdt),
        ("fdtable.fd", c.fdt_fd),
        ("file.private_data", c.file_private_data),
        ("socket.sk", c.socket_sk),
        ("socket.file", c.socket_file),
    ] {
        if loc.bit_size != 64 || loc.bit_offset % 8 != 0 {
            return Err(BtfError::Format(format!(
                "{name} is not a 64-bit pointer (bit offset {}, {} bits)",
                loc.bit_offset, loc.bit_size
            )));
        }
    }
    Ok(Resolved {
        config: c,
        unknown: r.unknown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::btf::blob::{Builder, ENUM, KFLAG, PTR, STRUCT, UNION};

    /// Which `inet_sock` option layout the hand-made kernel has.
    #[derive(Clone, Copy)]
    enum Layout {
        /// Before 6.6: one-bit bitfields in `inet_sock`.
        Bitfields,
        /// 6.6 and later: bits of `inet_sock.inet_flags`, numbered by `INET_FLAGS_*`.
        FlagsWord,
    }

    /// A BTF blob with every struct the programs read, laid out like a real x86_64 kernel
    /// (offsets in bits), with the option bits in `layout`; without `sock.sk_uid` when
    /// `with_uid` is false.
    fn kernel(layout: Layout, with_uid: bool) -> Btf {
        let mut b = Builder::new();
        let u8_ = b.int("unsigned char", 1, 8, 0);
        let u16_ = b.int("unsigned short", 2, 16, 0);
        let u32_ = b.int("unsigned int", 4, 32, 0);
        let u64_ = b.int("long unsigned int", 8, 64, 0);
        let ptr = b.ty(PTR << 24, "", 0, &[]);
        b.aggr(STRUCT, "task_struct", 4096, &[("files", ptr, 128)]);
        b.aggr(
            STRUCT,
            "pt_regs",
            168,
            &[("dx", u64_, 768), ("si", u64_, 832), ("di", u64_, 896)],
        );
        b.aggr(STRUCT, "files_struct", 64, &[("fdt", ptr, 256)]);
        b.aggr(
            STRUCT,
            "fdtable",
            32,
            &[("max_fds", u32_, 0), ("fd", ptr, 64)],
        );
        b.aggr(
            STRUCT,
            "file",
            256,
            &[("private_data", ptr, 192), ("f_inode", ptr, 256)],
        );
        b.aggr(STRUCT, "inode", 512, &[("i_ino", u64_, 512)]);
        b.aggr(
            STRUCT,
            "socket",
            128,
            &[("file", ptr, 128), ("sk", ptr, 192)],
        );
        let ns = b.aggr(STRUCT, "ns_common", 24, &[("inum", u32_, 128)]);
        b.aggr(STRUCT, "net", 4096, &[("ns", ns, 960)]);
        let in6 = b.aggr(STRUCT, "in6_addr", 16, &[]);
        let possible_net = b.aggr(STRUCT, "", 8, &[("net", ptr, 0)]);
        let ports = b.aggr(
            STRUCT,
            "",
            4,
            &[("skc_dport", u16_, 0), ("skc_num", u16_, 16)],
        );
        let portpair = b.aggr(UNION, "", 4, &[("skc_portpair", u32_, 0), ("", ports, 0)]);
        let common = b.aggr(
            STRUCT | KFLAG >> 24,
            "sock_common",
            136,
            &[
                ("skc_rcv_saddr", u32_, 32),
                ("", portpair, 96),
                ("skc_family", u16_, 128),
                ("skc_reuse", u8_, 4 << 24 | 152),
                ("skc_reuseport", u8_, 1 << 24 | 156),
                ("skc_ipv6only", u8_, 1 << 24 | 157),
                ("skc_bound_dev_if", u32_, 160),
                ("skc_net", possible_net, 384),
                ("skc_v6_rcv_saddr", in6, 448),
            ],
        );
        let mut sock_members = vec![
            ("__sk_common", common, 0),
            ("sk_protocol", u16_, 4256),
            ("sk_type", u16_, 4272),
        ];
        if with_uid {
            sock_members.push(("sk_uid", u32_, 4224));
        }
        let sock = b.aggr(STRUCT, "sock", 6400, &sock_members);
        match layout {
            Layout::Bitfields => {
                b.aggr(
                    STRUCT | KFLAG >> 24,
                    "inet_sock",
                    7000,
                    &[
                        ("sk", sock, 0),
                        ("freebind", u8_, 1 << 24 | 6600),
                        ("transparent", u8_, 1 << 24 | 6603),
                        ("bind_address_no_port", u8_, 1 << 24 | 6605),
                    ],
                );
            }
            Layout::FlagsWord => {
                b.aggr(
                    STRUCT,
                    "inet_sock",
                    7000,
                    &[("sk", sock, 0), ("inet_flags", u64_, 6400)],
                );
                let names = [
                    ("INET_FLAGS_PKTINFO", 0),
                    ("INET_FLAGS_FREEBIND", 11),
                    ("INET_FLAGS_TRANSPARENT", 15),
                    ("INET_FLAGS_BIND_ADDRESS_NO_PORT", 18),
                ];
                let words: Vec<u32> = names.iter().flat_map(|&(n, v)| [b.s(n), v]).collect();
                b.ty(ENUM << 24 | names.len() as u32, "", 4, &words);
            }
        }
        Btf::from_bytes(&b.build()).expect("hand-made BTF parses")
    }

    fn spans(list: &[(u32, u32)]) -> [Span; SK_SPANS] {
        let mut out = [Span::EMPTY; SK_SPANS];
        for (slot, &(start, end)) in out.iter_mut().zip(list) {
            *slot = Span {
                offset: start,
                len: end - start,
            };
        }
        out
    }

    fn bit(bit_offset: u32) -> FieldLoc {
        FieldLoc {
            bit_offset,
            bit_size: 1,
        }
    }

    #[test]
    fn resolves_the_pre_6_6_bitfield_layout() {
        let r = resolve(&kernel(Layout::Bitfields, true)).expect("resolve");
        assert!(r.unknown.is_empty(), "{:?}", r.unknown);
        assert_eq!(
            r.config.sk_spans,
            spans(&[(0, 72), (528, 536), (824, 832)]),
            "sock_common; uid, protocol, type; the inet_sock bits 6600..6605"
        );
        let expected = [
            FieldLoc {
                bit_offset: 152,
                bit_size: 4,
            },
            bit(156),
            bit(157),
            bit(6600),
            bit(6603),
            bit(6605),
        ];
        assert_eq!(r.config.flag_locs, expected);
        assert_eq!(
            r.config.sk_num,
            FieldLoc {
                bit_offset: 112,
                bit_size: 16
            },
            "skc_num sits in an anonymous struct in an anonymous union"
        );
        assert_eq!(
            r.config.net_inum,
            FieldLoc {
                bit_offset: 1088,
                bit_size: 32
            }
        );
        assert_eq!(r.config.sk_v6_rcv_saddr.bit_size, 128);
        let word = |bit_offset| FieldLoc {
            bit_offset,
            bit_size: 64,
        };
        let c = r.config;
        assert_eq!(
            [c.regs_arg0, c.regs_arg1, c.regs_arg2],
            [word(896), word(832), word(768)],
            "fd, umyaddr, addrlen from di, si, dx"
        );
    }

    #[test]
    fn resolves_the_6_6_flags_word_layout() {
        let r = resolve(&kernel(Layout::FlagsWord, true)).expect("resolve");
        assert!(r.unknown.is_empty(), "{:?}", r.unknown);
        assert_eq!(r.config.flag_locs[3..], [bit(6411), bit(6415), bit(6418)]);
        assert_eq!(
            r.config.sk_spans,
            spans(&[(0, 72), (528, 536), (800, 808)]),
            "the last stretch is the word of inet_flags (bits 6400..6464)"
        );
    }

    #[test]
    fn a_missing_field_is_named_and_left_unknown() {
        let r = resolve(&kernel(Layout::FlagsWord, false)).expect("resolve");
        assert_eq!(r.unknown, vec!["sock_uid (sock.sk_uid)".to_string()]);
        assert!(!r.config.sk_uid.is_known());
        assert_eq!(r.config.version, CONFIG_VERSION);
    }

    /// On the running kernel (every kernel this project supports has BTF at this path).
    #[test]
    fn resolves_on_the_running_kernel() {
        let path = std::path::Path::new("/sys/kernel/btf/vmlinux");
        if !path.exists() {
            let why = format!("{} does not exist", path.display());
            return crate::testenv::missing("offsets::resolves_on_the_running_kernel", &why);
        }
        // There but unreadable is a failure, not a skip.
        let btf = Btf::from_sys_fs().expect("the running kernel's BTF");
        let r = resolve(&btf).expect("resolve");
        assert!(r.unknown.is_empty(), "unresolved: {:?}", r.unknown);
        let c = r.config;
        assert_eq!(c.sk_num.bit_size, 16);
        assert_eq!(c.sk_family.bit_size, 16);
        assert_eq!(c.sk_rcv_saddr.bit_size, 32);
        assert_eq!(c.sk_v6_rcv_saddr.bit_size, 128);
        assert_eq!(c.flag_locs[0].bit_size, 4, "skc_reuse is a 4-bit field");
        for loc in &c.flag_locs[1..] {
            assert_eq!(loc.bit_size, 1);
        }
        // The x86-64 layout of `struct pt_regs`: di, si, dx are words 14, 13, 12.
        assert_eq!(
            [c.regs_arg0, c.regs_arg1, c.regs_arg2].map(|l| (l.bit_offset / 64, l.bit_size)),
            [(14, 64), (13, 64), (12, 64)]
        );
        assert!(c.socket_ino.is_known(), "socket_alloc.vfs_inode.i_ino");
        // Every socket field lies in a copied stretch: none costs a read of its own.
        for l in sock_fields(&c) {
            let (start, end) = (l.bit_offset / 8, (l.bit_offset + l.bit_size).div_ceil(8));
            assert!(
                c.sk_spans.iter().any(|s| s.holds(start, end)),
                "{l:?} outside {:?}",
                c.sk_spans
            );
        }
    }
}
