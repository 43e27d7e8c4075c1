//! The socket options the observer reports, as the collector uses them: [`Opt`] names one
//! entry of the table in `observer_common::sockopt::ALL`, where each option is declared once
//! (bit, kernel field, `setsockopt` level and name, JSON key, table letter, description).

use observer_common::sockopt::{ALL, SockOpt};

/// A socket option the observer reports, in bit order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Opt {
    ReuseAddr,
    ReusePort,
    V6Only,
    FreeBind,
    Transparent,
    BindAddressNoPort,
}

impl Opt {
    /// Every option, in the order of `observer_common::sockopt::ALL` (bit order).
    pub const ALL: [Opt; observer_common::FLAG_COUNT] = [
        Opt::ReuseAddr,
        Opt::ReusePort,
        Opt::V6Only,
        Opt::FreeBind,
        Opt::Transparent,
        Opt::BindAddressNoPort,
    ];

    /// Its entry in the table.
    pub fn spec(self) -> &'static SockOpt {
        &ALL[self as usize]
    }

    /// The JSON key events report it under.
    pub fn key(self) -> &'static str {
        self.spec().key
    }

    /// The name `setsockopt(2)` documents, e.g. `"SO_REUSEADDR"`.
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// `(level, name)` for `setsockopt`/`getsockopt`; an IPv6 socket takes the IPv6 spelling
    /// where there is one (`IPV6_FREEBIND`).
    pub fn sockopt(self, v6: bool) -> (libc::c_int, libc::c_int) {
        let spec = self.spec();
        if v6 { spec.v6 } else { spec.v4 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_bit_order_and_matches_libc() {
        for (i, opt) in Opt::ALL.into_iter().enumerate() {
            assert_eq!(opt.spec().bit, 1 << i, "{opt:?}");
        }
        let expect = [
            (
                Opt::ReuseAddr,
                false,
                (libc::SOL_SOCKET, libc::SO_REUSEADDR),
            ),
            (Opt::ReuseAddr, true, (libc::SOL_SOCKET, libc::SO_REUSEADDR)),
            (
                Opt::ReusePort,
                false,
                (libc::SOL_SOCKET, libc::SO_REUSEPORT),
            ),
            (Opt::ReusePort, true, (libc::SOL_SOCKET, libc::SO_REUSEPORT)),
            (Opt::V6Only, true, (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY)),
            (Opt::FreeBind, false, (libc::IPPROTO_IP, libc::IP_FREEBIND)),
            (
                Opt::FreeBind,
                true,
                (libc::IPPROTO_IPV6, libc::IPV6_FREEBIND),
            ),
            (
                Opt::Transparent,
                false,
                (libc::IPPROTO_IP, libc::IP_TRANSPARENT),
            ),
            (
                Opt::Transparent,
                true,
                (libc::IPPROTO_IP, libc::IP_TRANSPARENT),
            ),
            (
                Opt::BindAddressNoPort,
                false,
                (libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT),
            ),
            (
                Opt::BindAddressNoPort,
                true,
                (libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT),
            ),
        ];
        for (opt, v6, want) in expect {
            assert_eq!(opt.sockopt(v6), want, "{opt:?} v6={v6}");
        }
    }

    #[test]
    fn keys_and_letters_are_distinct() {
        let keys: std::collections::BTreeSet<_> = ALL.iter().map(|o| o.key).collect();
        let letters: std::collections::BTreeSet<_> = ALL.iter().map(|o| o.letter).collect();
        assert_eq!(keys.len(), ALL.len());
        assert_eq!(letters.len(), ALL.len());
        assert!(!letters.contains(&b'.') && !letters.contains(&b'?'));
    }

    #[test]
    fn the_help_text_names_every_letter() {
        for o in &ALL {
            let entry = format!("{} {}", char::from(o.letter), o.name);
            assert!(crate::cli::OPTS_HELP.contains(&entry), "{entry}");
        }
    }
}
