//! The kernel-specific half of the programs' `Config`: where each field the programs read lives
//! on the running kernel, found in its BTF.
//!
//! Two layouts of the `inet_sock` option bits exist: before 6.6 they are bitfields
//! (`inet_sock.freebind:1`, ...); since 6.6 they are bits of `inet_sock.inet_flags`, numbered by
//! the `INET_FLAGS_*` enumerators. Both resolve to a bit position relative to `struct sock`
//! (an `inet_sock` starts with its `struct sock`), so the programs need one reader for both.

use crate::btf::{Btf, BtfError, MemberLoc};
use observer_common::{CONFIG_VERSION, Config, FLAG_COUNT, FieldLoc};

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
    let flags: [FieldLoc; FLAG_COUNT] = [
        r.loc("sock.__sk_common.skc_reuse", "reuseaddr")?,
        r.loc("sock.__sk_common.skc_reuseport", "reuseport")?,
        r.loc("sock.__sk_common.skc_ipv6only", "v6only")?,
        r.inet_flag("freebind", "INET_FLAGS_FREEBIND", "freebind")?,
        r.inet_flag("transparent", "INET_FLAGS_TRANSPARENT", "transparent")?,
        r.inet_flag(
            "bind_address_no_port",
            "INET_FLAGS_BIND_ADDRESS_NO_PORT",
            "bind_address_no_port",
        )?,
    ];
    c.flag_locs = flags;
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

    /// On the running kernel (every kernel this project supports has BTF at this path).
    #[test]
    fn resolves_on_the_running_kernel() {
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("no /sys/kernel/btf/vmlinux here: skipped");
            return;
        };
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
    }
}
