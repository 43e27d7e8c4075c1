//! Every failed bind and listen explained, each errno made for real in a private network
//! namespace: the event's `conflict` is `refused` with the kernel's rule (`refusal`), its
//! facts and the fixes, exactly.

// Only part of the shared harness is used here.
#[allow(unused_imports)]
mod common;

use common::expect::{cgroup_json, cgroup2_root, refused};
use common::nobody::bind_in_cgroup;
use common::{
    Caller, NOBODY, Observer, Opt, Sock, bind_as_nobody, bind_event, in_netns, listen_event,
};
use serde_json::json;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::process::Command;

const NONLOCAL_FIXES: [&str; 4] = [
    "set IP_FREEBIND on this socket (checked: the kernel then accepts the address)",
    "or IP_TRANSPARENT (needs CAP_NET_ADMIN)",
    "or sysctl -w net.ipv4.ip_nonlocal_bind=1 in this namespace",
    "bind 0.0.0.0 or one of the addresses above",
];

const PRIVILEGED_FIXES: [&str; 3] = [
    "give the process CAP_NET_BIND_SERVICE (systemd: AmbientCapabilities=CAP_NET_BIND_SERVICE; a binary: setcap cap_net_bind_service=+ep)",
    "sysctl -w net.ipv4.ip_unprivileged_port_start=80 in this namespace",
    "a port from 1024 up",
];

/// `ip ARGS` in the calling thread's namespace.
fn ip(args: &[&str]) {
    let _no_forks = common::no_forks();
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(out.status.success(), "ip {args:?}: {out:?}");
}

#[test]
fn eaddrnotavail_names_the_local_addresses_and_freebind() {
    in_netns("refuse-notavail", |c| {
        let mut obs = Observer::watch(c, &[]);
        let s = Sock::tcp4();
        assert_eq!(s.bind("192.0.2.1:5000"), libc::EADDRNOTAVAIL);
        obs.expect_explained(
            bind_event(c, &s, "192.0.2.1:5000")
                .fails("EADDRNOTAVAIL", 99)
                .conflict(refused(
                    "EADDRNOTAVAIL",
                    "address-not-local",
                    "192.0.2.1 is not an address of this network namespace",
                    &[
                        "IPv4 addresses here: 127.0.0.1",
                        "net.ipv4.ip_nonlocal_bind = 0",
                    ],
                    &NONLOCAL_FIXES,
                )),
        );
        let summary = obs.stop();
        assert_eq!(summary["refusal_lookups"], 1, "{summary}");
        assert_eq!(summary["refusals_explained"], 1, "{summary}");
        assert_eq!(summary["refusals_unexplained"], 0, "{summary}");
    });
}

/// An address on a link without carrier stays tentative (duplicate address detection cannot
/// run): the kernel refuses it, and the explanation says why.
#[test]
fn a_tentative_ipv6_address_is_named_as_not_ready() {
    in_netns("refuse-tentative", |c| {
        ip(&[
            "link", "add", "obs0", "type", "veth", "peer", "name", "obs1",
        ]);
        ip(&["link", "set", "obs0", "up"]);
        ip(&["addr", "add", "fd00:db8::1/64", "dev", "obs0"]);
        let mut obs = Observer::watch(c, &[]);
        let s = Sock::tcp6();
        assert_eq!(s.bind("[fd00:db8::1]:5000"), libc::EADDRNOTAVAIL);
        let tentative =
            "tentative: duplicate address detection has not finished (or the link has no carrier)";
        obs.expect_explained(
            bind_event(c, &s, "[fd00:db8::1]:5000")
                .fails("EADDRNOTAVAIL", 99)
                .conflict(refused(
                    "EADDRNOTAVAIL",
                    "address-not-ready",
                    &format!("fd00:db8::1 is an address of this network namespace, but {tentative}"),
                    &[
                        &format!("IPv6 addresses here: ::1, fd00:db8::1 ({tentative})"),
                        "net.ipv6.ip_nonlocal_bind = 0",
                    ],
                    &[
                        // IP_FREEBIND skips ipv6_chk_addr, which bans tentative addresses.
                        "set IP_FREEBIND on this socket (checked: the kernel then accepts the address)",
                        "or IP_TRANSPARENT (needs CAP_NET_ADMIN)",
                        "or sysctl -w net.ipv6.ip_nonlocal_bind=1 in this namespace (the IPv4 one does not apply to IPv6)",
                        "bind [::] or one of the addresses above",
                    ],
                )),
        );
        obs.stop();
    });
}

#[test]
fn eacces_as_nobody_whose_capabilities_are_gone() {
    in_netns("refuse-eacces", |c| {
        let mut obs = Observer::watch(c, &[]);
        let child = bind_as_nobody(c, "127.0.0.1:80".parse().unwrap());
        assert_eq!(child.errno, libc::EACCES);
        assert_eq!(child.caller.uid, NOBODY);
        // The lookup may read the child before it exits (it lacks the capability) or after
        // (its capabilities cannot be read any more): either is said as it is.
        let text = |how: &str| {
            format!(
                "port 80 is below net.ipv4.ip_unprivileged_port_start (1024) of this network \
                 namespace, and the caller needs CAP_NET_BIND_SERVICE in the user namespace \
                 that owns it: pid {}{how}",
                child.caller.pid
            )
        };
        let gone = text(
            "'s capabilities could not be read: it has exited (so whether it lacked it is not \
             known)",
        );
        let alive = text(
            " lacks CAP_NET_BIND_SERVICE in its effective set, in the user namespace that owns \
             the network namespace",
        );
        let want = |text: &str| {
            bind_event(&child.caller, &child.sock, "127.0.0.1:80")
                .fails("EACCES", 13)
                .conflict(refused(
                    "EACCES",
                    "privileged-port",
                    text,
                    &["net.ipv4.ip_unprivileged_port_start = 1024 (covers IPv6 too)"],
                    &PRIVILEGED_FIXES,
                ))
        };
        let got = obs.take(1).remove(0);
        let mut got = got;
        if got["conflict"]["verdict"] == "pending" {
            got["conflict"] =
                obs.take_explanation(got["seq"].as_u64().unwrap())["conflict"].clone();
        }
        let said = got["conflict"]["refusal"]["text"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(said == gone || said == alive, "{got}");
        let mut g = got.clone();
        g.as_object_mut().unwrap().remove("time");
        g.as_object_mut().unwrap().remove("seq");
        assert_eq!(g, want(&said).json());
        obs.stop();
    });
}

/// Sets the calling thread's effective capability set to `eff` (the low 32 bits and the
/// high), keeping the permitted set: capabilities are per thread.
fn set_effective(eff: [u32; 2]) -> [u32; 2] {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut h = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: capget fills two Data entries for version 3.
    assert_eq!(
        unsafe { libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()) },
        0
    );
    let old = [d[0].effective, d[1].effective];
    d[0].effective = eff[0];
    d[1].effective = eff[1];
    // SAFETY: as above; only this thread's sets change.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()) };
    assert_eq!(rc, 0, "capset: {}", std::io::Error::last_os_error());
    old
}

/// A caller still alive: this thread, root without CAP_NET_BIND_SERVICE in its effective set.
#[test]
fn eacces_reads_the_live_callers_capabilities_in_the_owning_user_namespace() {
    in_netns("refuse-eacces-live", |c| {
        let mut obs = Observer::watch(c, &[]);
        let s = Sock::tcp4();
        let old = set_effective([0, 0]);
        let errno = s.bind("127.0.0.1:80");
        let got = {
            // Restored only after the explanation was read: the lookup reads it meanwhile.
            let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                assert_eq!(errno, libc::EACCES);
                obs.expect_explained(
                    bind_event(c, &s, "127.0.0.1:80")
                        .fails("EACCES", 13)
                        .conflict(refused(
                            "EACCES",
                            "privileged-port",
                            &format!(
                                "port 80 is below net.ipv4.ip_unprivileged_port_start (1024) of \
                                 this network namespace, and the caller needs \
                                 CAP_NET_BIND_SERVICE in the user namespace that owns it: pid {} \
                                 lacks CAP_NET_BIND_SERVICE in its effective set, in the user \
                                 namespace that owns the network namespace",
                                c.pid
                            ),
                            &["net.ipv4.ip_unprivileged_port_start = 1024 (covers IPv6 too)"],
                            &PRIVILEGED_FIXES,
                        )),
                )
            }));
            set_effective(old);
            got
        };
        if let Err(panic) = got {
            std::panic::resume_unwind(panic);
        }
        // The capability back before the lookup reads it: the rule cannot say the caller
        // lacked it, and says what else can have refused (another port: no repeat of the first).
        let s2 = Sock::tcp4();
        let old = set_effective([0, 0]);
        let errno = s2.bind("127.0.0.1:81");
        set_effective(old);
        assert_eq!(errno, libc::EACCES);
        let has = format!(
            "pid {} has CAP_NET_BIND_SERVICE in its effective set, in the user namespace that \
             owns the network namespace",
            c.pid
        );
        obs.expect_explained(
            bind_event(c, &s2, "127.0.0.1:81")
                .fails("EACCES", 13)
                .conflict(refused(
                    "EACCES",
                    "refused-elsewhere",
                    "port 81 is below net.ipv4.ip_unprivileged_port_start (1024), and the caller \
                     holds CAP_NET_BIND_SERVICE over the namespace now: either it lacked it when \
                     it called (capabilities can change), or an LSM (security_socket_bind) or a \
                     cgroup BPF program (bpf_set_retval) refused",
                    &[
                        "net.ipv4.ip_unprivileged_port_start = 1024 (covers IPv6 too)",
                        &has,
                    ],
                    &[],
                )),
        );
        obs.stop();
    });
}

#[test]
fn einval_second_bind_and_mapped_on_v6only_enodev_scope() {
    in_netns("refuse-einval", |c| {
        let mut obs = Observer::watch(c, &[]);
        let s = Sock::tcp4();
        assert_eq!(s.bind("127.0.0.1:5000"), 0);
        obs.expect(&[bind_event(c, &s, "127.0.0.1:5000").bound("127.0.0.1:5000")]);
        assert_eq!(s.bind("127.0.0.1:5001"), libc::EINVAL);
        obs.expect_explained(
            bind_event(c, &s, "127.0.0.1:5001")
                .bound("127.0.0.1:5000")
                .fails("EINVAL", 22)
                .conflict(refused(
                    "EINVAL",
                    "already-bound",
                    "the socket is already bound, to 127.0.0.1:5000: a socket is bound once \
                     (__inet_bind / __inet6_bind refuse a socket that has a port or is not \
                     closed)",
                    &[],
                    &["bind a new socket to 127.0.0.1:5001"],
                )),
        );
        let v6 = Sock::tcp6().set(Opt::V6Only, true);
        assert_eq!(v6.bind("[::ffff:127.0.0.1]:5002"), libc::EINVAL);
        obs.expect_explained(
            bind_event(c, &v6, "[::ffff:127.0.0.1]:5002")
                .flag(Opt::V6Only)
                .fails("EINVAL", 22)
                .conflict(refused(
                    "EINVAL",
                    "mapped-on-v6only",
                    "an IPv4-mapped address cannot be bound on an IPV6_V6ONLY socket",
                    &[],
                    &["clear IPV6_V6ONLY on this socket, or bind an AF_INET socket to the IPv4 address"],
                )),
        );
        let scoped = Sock::tcp6();
        assert_eq!(scoped.bind("[fe80::1%999]:5003"), libc::ENODEV);
        let mut want = bind_event(c, &scoped, "[fe80::1]:5003")
            .fails("ENODEV", 19)
            .conflict(refused(
                "ENODEV",
                "unknown-scope",
                "scope id 999 names no interface of this network namespace",
                &["interfaces: lo (1)"],
                &["the index of one of those interfaces as the scope id: [ADDR%INDEX]:PORT"],
            ))
            .json();
        want["requested"]["scope_id"] = json!(999);
        // The kernel sets the bound device from the scope id before it looks the device up.
        want["bound_dev_if"] = json!(999);
        let got = obs.take(1).remove(0);
        let mut got = got;
        if got["conflict"]["verdict"] == "pending" {
            got["conflict"] =
                obs.take_explanation(got["seq"].as_u64().unwrap())["conflict"].clone();
        }
        let mut g = got.clone();
        g.as_object_mut().unwrap().remove("time");
        g.as_object_mut().unwrap().remove("seq");
        assert_eq!(g, want);
        let udp = Sock::udp4();
        assert_eq!(udp.listen(), libc::EOPNOTSUPP);
        obs.expect_explained(
            listen_event(c, &udp)
                .fails("EOPNOTSUPP", 95)
                .conflict(refused(
                    "EOPNOTSUPP",
                    "listen-not-stream",
                    "listen() is for stream sockets: a udp socket's listen is sock_no_listen, \
                     which returns EOPNOTSUPP",
                    &[],
                    &["a SOCK_STREAM (TCP) socket"],
                )),
        );
        let summary = obs.stop();
        assert_eq!(summary["refusal_lookups"], 1, "{summary}");
        assert_eq!(summary["refusals_explained"], 4, "{summary}");
    });
}

// ----- EPERM: a cgroup bind4 program ---------------------------------------------------------

fn bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> std::io::Result<i64> {
    // SAFETY: `attr` is a zeroed bpf_attr of 128 bytes with the command's fields set.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), 128u32) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Loads `r0 = 0; exit` as a `cgroup/bind4` program named `deny_bind` (every bind refused with
/// EPERM); returns its descriptor and id.
fn load_deny_bind4() -> (OwnedFd, u32) {
    // BPF_MOV64_IMM(BPF_REG_0, 0); BPF_EXIT_INSN()
    let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
    let license = c"GPL";
    let mut attr = [0u64; 16];
    attr[0] = 18 | (2 << 32); // BPF_PROG_TYPE_CGROUP_SOCK_ADDR, 2 instructions
    attr[1] = insns.as_ptr() as u64;
    attr[2] = license.as_ptr() as u64;
    let name = b"deny_bind\0";
    // prog_name at offset 48; expected_attach_type (BPF_CGROUP_INET4_BIND = 8) at 68.
    let bytes: &mut [u8; 128] = unsafe { &mut *(attr.as_mut_ptr() as *mut [u8; 128]) };
    bytes[48..48 + name.len()].copy_from_slice(name);
    bytes[68..72].copy_from_slice(&8u32.to_ne_bytes());
    let fd = bpf(5, &mut attr).expect("BPF_PROG_LOAD of a cgroup/bind4 program") as i32;
    // SAFETY: a fresh descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut info = [0u8; 80];
    let mut attr = [0u64; 16];
    attr[0] = u64::from(fd.as_raw_fd() as u32) | (80 << 32);
    attr[1] = info.as_mut_ptr() as u64;
    bpf(15, &mut attr).expect("BPF_OBJ_GET_INFO_BY_FD");
    let id = u32::from_ne_bytes(info[4..8].try_into().unwrap());
    (fd, id)
}

/// BPF_PROG_ATTACH (8) or BPF_PROG_DETACH (9) of `prog` at cgroup directory `dir`, bind4.
fn attach(cmd: libc::c_long, dir: &std::path::Path, prog: &OwnedFd) {
    let cg = std::fs::File::open(dir).unwrap();
    let mut attr = [0u64; 16];
    attr[0] = u64::from(cg.as_raw_fd() as u32) | (u64::from(prog.as_raw_fd() as u32) << 32);
    attr[1] = 8; // BPF_CGROUP_INET4_BIND, no flags
    bpf(cmd, &mut attr).unwrap_or_else(|e| panic!("bpf cmd {cmd} at {}: {e}", dir.display()));
}

#[test]
fn eperm_names_the_cgroup_bind4_program_and_where_it_is_attached() {
    in_netns("refuse-eperm", |c: &Caller| {
        let root = cgroup2_root();
        let top = format!("observer-test-{}-eperm", std::process::id());
        let (parent, leaf) = (root.join(&top), root.join(&top).join("svc"));
        let _ = std::fs::remove_dir(&leaf);
        let _ = std::fs::remove_dir(&parent);
        std::fs::create_dir_all(&leaf).unwrap();
        let (prog, id) = load_deny_bind4();
        attach(8, &parent, &prog);
        let mut obs = Observer::watch(c, &[]);
        let child = bind_in_cgroup(c, "127.0.0.1:7001".parse().unwrap(), &leaf);
        assert_eq!(child.errno, libc::EPERM);
        let path = format!("/{top}/svc");
        obs.expect_explained(
            bind_event(&child.caller, &child.sock, "127.0.0.1:7001")
                .fails("EPERM", 1)
                .cgroup(cgroup_json(&path, json!(null), json!(null)))
                .conflict(refused(
                    "EPERM",
                    "cgroup-bpf",
                    "a cgroup BPF program refused the bind: the bind4 programs run before any \
                     check of bind() and a verdict of 0 is EPERM; post_bind4 programs run after \
                     the port is taken and release it (systemd: SocketBindAllow=/SocketBindDeny=)",
                    &[&format!(
                        "bind4 program id {id} (deny_bind) attached at cgroup /{top}"
                    )],
                    &[&format!(
                        "allow this address and port in the program (systemd: SocketBindAllow= \
                         of the unit owning /{top}), or run the process in a cgroup the program \
                         does not cover"
                    )],
                )),
        );
        attach(9, &parent, &prog);
        obs.stop();
        std::fs::remove_dir(&leaf).unwrap();
        std::fs::remove_dir(&parent).unwrap();
    });
}
