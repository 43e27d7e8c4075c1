//! What real calls decode to where the kernel holds less than a plain bind leaves (root, each
//! test in its own network namespace, every field of every event checked):
//!
//! * an address without a port (`IP_BIND_ADDRESS_NO_PORT`): `bound` is the address with port 0;
//! * address lengths `bind()` refuses before it reads the address: no `requested` address;
//! * a socket that is not inet (`AF_UNIX`): no protocol and no `inet_sock` options;
//!
//! and none of these events names a field as `unreadable`, nor counts one in the summary.

#[allow(unused_imports)]
mod common;

use common::{Caller, Observer, Opt, Sock, bind_event, in_netns, listen_event};
use serde_json::{Value, json};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `got` and `want` equal in every field but `time` and `seq` (checked by the harness).
fn assert_same(got: &Value, want: &Value, what: &str) {
    let (mut got, mut want) = (got.clone(), want.clone());
    for key in ["time", "seq"] {
        got.as_object_mut().unwrap().remove(key);
        want.as_object_mut().unwrap().remove(key);
    }
    assert_eq!(got, want, "{what}");
}

/// Stops the observer: the summary counts no event with an unreadable field.
fn stop(obs: Observer) {
    let summary = obs.stop();
    assert_eq!(summary["read_errors"], 0, "{summary}");
}

#[test]
fn address_without_port_is_bound_with_port_zero() {
    in_netns("no-port-bind", |c| {
        let mut obs = Observer::watch(c, &[]);
        let tcp = Sock::tcp4().set(Opt::BindAddressNoPort, true);
        assert_eq!(tcp.bind("127.0.0.1:0"), 0);
        // What getsockname says the socket holds.
        assert_eq!(tcp.local().to_string(), "127.0.0.1:0");
        let udp6 = Sock::udp6().set(Opt::BindAddressNoPort, true);
        assert_eq!(udp6.bind("[::1]:0"), 0);
        assert_eq!(udp6.local().to_string(), "[::1]:0");
        // The wildcard without a port is what an unbound socket holds.
        let any = Sock::tcp4().set(Opt::BindAddressNoPort, true);
        assert_eq!(any.bind("0.0.0.0:0"), 0);
        assert_eq!(any.local().to_string(), "0.0.0.0:0");
        // listen() then takes a port for it (autobind), on that address.
        assert_eq!(tcp.listen(), 0);
        let port = tcp.local().port();
        assert_ne!(port, 0);
        obs.expect(&[
            bind_event(c, &tcp, "127.0.0.1:0")
                .bound("127.0.0.1:0")
                .flag(Opt::BindAddressNoPort),
            bind_event(c, &udp6, "[::1]:0")
                .bound("[::1]:0")
                .flag(Opt::BindAddressNoPort)
                .flag(Opt::V6Only),
            bind_event(c, &any, "0.0.0.0:0").flag(Opt::BindAddressNoPort),
            listen_event(c, &tcp)
                .bound(&format!("127.0.0.1:{port}"))
                .flag(Opt::BindAddressNoPort),
        ]);
        stop(obs);
    });
}

/// `bind(fd, &sockaddr_in{127.0.0.1:8080}, len)` made raw; the errno.
fn bind_raw(fd: i32, len: libc::socklen_t) -> i32 {
    let sin = common::sock::sockaddr_in("127.0.0.1:8080".parse().unwrap());
    // The address lives in a buffer as long as the longest length passed, so the kernel could
    // read every byte it is told to (it refuses those lengths before reading any).
    let mut buf = [0u8; 256];
    // SAFETY: `sockaddr_in` is plain data of 16 bytes, copied into a 256-byte buffer.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (&sin as *const libc::sockaddr_in).cast::<u8>(),
            buf.as_mut_ptr(),
            std::mem::size_of::<libc::sockaddr_in>(),
        )
    };
    // SAFETY: `buf` outlives the call; the kernel reads at most `len` bytes of it when `len`
    // is at most 128, and none otherwise.
    let rc = unsafe { libc::bind(fd, buf.as_ptr().cast(), len) };
    if rc == 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap()
    }
}

#[test]
fn refused_address_lengths_show_no_requested_address() {
    in_netns("addrlen-binds", |c| {
        let mut obs = Observer::watch(c, &[]);
        let s = Sock::tcp4();
        // -1 (as the kernel's int), over sizeof(struct sockaddr_storage), and 0: nothing read.
        let refused: [libc::socklen_t; 4] = [u32::MAX, 129, 200, 0];
        for len in refused {
            assert_eq!(bind_raw(s.fd(), len), libc::EINVAL, "addrlen {len}");
        }
        // 8: read, then refused as shorter than a sockaddr_in (inet_bind_sk).
        assert_eq!(bind_raw(s.fd(), 8), libc::EINVAL);
        // 128: read, and a sockaddr_in in a longer buffer is fine.
        assert_eq!(bind_raw(s.fd(), 128), 0);
        let got = obs.take(refused.len() + 2);
        let einval = |requested: Value| {
            // The explanation (tests/refusals.rs has the others): the address length rule.
            let text = if requested.is_null() {
                "the address length is out of range: below 0 or over 128 (sizeof(struct \
                 sockaddr_storage): net/socket.c move_addr_to_kernel), or 0, below the 16 bytes \
                 of the family's sockaddr (inet_bind_sk)"
                    .to_string()
            } else {
                "address length 8 is shorter than the family's sockaddr (16 bytes): inet_bind_sk \
                 refuses it before reading the address"
                    .to_string()
            };
            let mut v = bind_event(c, &s, "127.0.0.1:8080")
                .fails("EINVAL", libc::EINVAL)
                .conflict(common::expect::refused(
                    "EINVAL",
                    "address-length",
                    &text,
                    &[],
                    &["pass the length of the family's sockaddr (16)"],
                ))
                .json();
            v["requested"] = requested;
            v
        };
        for (len, event) in refused.iter().zip(&got) {
            assert_same(event, &einval(Value::Null), &format!("addrlen {len}"));
        }
        assert_same(
            &got[refused.len()],
            &einval(json!({"sa_family": libc::AF_INET, "addrlen": 8})),
            "addrlen 8",
        );
        assert_same(
            &got[refused.len() + 1],
            &bind_event(c, &s, "127.0.0.1:8080")
                .bound("127.0.0.1:8080")
                .json(),
            "addrlen 128",
        );
        stop(obs);
    });
}

/// An AF_UNIX socket bound to an abstract name, in this thread's namespace.
#[test]
fn unix_socket_has_no_protocol_and_no_inet_options() {
    in_netns("unix-bind", |c: &Caller| {
        let mut obs = Observer::watch(c, &["--all-families"]);
        // SAFETY: socket(2) with constant arguments; the descriptor is owned below.
        let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: a new descriptor owned here only.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: plain data, filled below.
        let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let name = format!("observer-test-{}", c.tid);
        // sun_path[0] stays 0: an abstract name, gone with the socket.
        for (slot, b) in sun.sun_path[1..].iter_mut().zip(name.bytes()) {
            *slot = b as libc::c_char;
        }
        let len = (2 + 1 + name.len()) as libc::socklen_t;
        // SAFETY: `sun` outlives the call and is at least `len` bytes.
        let rc = unsafe {
            libc::bind(
                sock.as_raw_fd(),
                (&sun as *const libc::sockaddr_un).cast(),
                len,
            )
        };
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        // SAFETY: plain data; fstat fills it.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `st` is a valid out pointer.
        assert_eq!(unsafe { libc::fstat(sock.as_raw_fd(), &mut st) }, 0);
        let got = obs.take(1);
        let want = json!({
            "type": "bind",
            "op": "bind",
            "pid": c.pid,
            "tid": c.tid,
            "uid": c.uid,
            "comm": c.comm,
            "netns": c.netns,
            "family": "unix",
            "protocol": null,
            "fd": sock.as_raw_fd(),
            "requested": {"sa_family": libc::AF_UNIX, "addrlen": len},
            "bound": null,
            "reuseaddr": false,
            "reuseport": false,
            "v6only": false,
            "freebind": null,
            "transparent": null,
            "bind_address_no_port": null,
            "bound_dev_if": 0,
            "sock_uid": c.uid,
            "sock_ino": st.st_ino,
            "result": "OK",
            "errno": 0,
            "hook": "tracepoint:sys_exit_bind",
            "call_id": null,
            "cgroup": common::expect::own_cgroup(),
        });
        assert_same(&got[0], &want, "AF_UNIX bind");
        stop(obs);
    });
}
