//! The sock_diag dump parser (`conflict::socktable::parse_batch`): any bytes as one `recv()`
//! of netlink messages. Never a panic; a message whose length does not fit is an error, not a
//! read past the end; every socket parsed comes from a message of at least the
//! `inet_diag_msg` size.

#![no_main]

use libfuzzer_sys::fuzz_target;
use observer::model::Proto;
use observer::conflict::socktable::parse_batch;

/// `sizeof(struct nlmsghdr) + sizeof(struct inet_diag_msg)`.
const SMALLEST_SOCKET_MESSAGE: usize = 16 + 72;

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let proto = if which & 1 == 0 {
        Proto::Tcp
    } else {
        Proto::Udp
    };
    let mut out = Vec::new();
    let result = parse_batch(bytes, proto, &mut out);
    assert!(out.len() <= bytes.len() / SMALLEST_SOCKET_MESSAGE);
    for s in &out {
        assert_eq!(s.proto, proto);
    }
    if let Err(err) = result {
        assert!(!err.to_string().is_empty());
    }
});
