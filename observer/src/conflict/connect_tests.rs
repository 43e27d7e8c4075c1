use super::*;
use std::net::Ipv6Addr;

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn dst() -> SocketAddr {
    SocketAddr::new(LO, 5000)
}

fn sock(state: u8, port: u16, dst: Option<SocketAddr>, inode: u64) -> DiagSock {
    DiagSock {
        proto: Proto::Tcp,
        addr: LO,
        port,
        state,
        v6only: Some(false),
        bound_dev_if: 0,
        uid: 0,
        inode,
        expires_ms: 0,
        cookie: 0,
        dst: dst.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |d| d.ip()),
        dport: dst.map_or(0, |d| d.port()),
    }
}

const ESTABLISHED: u8 = 1;

fn counted(range: [u16; 2], reserved: &str, table: &[DiagSock]) -> Counts {
    let reserved = super::super::ephemeral::parse_ports(reserved);
    count(range, &reserved, Some(LO), dst(), table)
}

#[test]
fn each_port_is_judged_in_the_kernels_order() {
    let table = [
        // 40000: reserved, also connected: reserved wins (checked first).
        sock(ESTABLISHED, 40000, Some(dst()), 1),
        // 40001: a listener on it (another address's would do too).
        sock(TCP_LISTEN, 40001, None, 2),
        // 40002: connected to the destination.
        sock(ESTABLISHED, 40002, Some(dst()), 3),
        // 40003: TIME_WAIT to the destination.
        sock(TCP_TIME_WAIT, 40003, Some(dst()), 0),
        // 40004: connected elsewhere: one port serves many destinations.
        sock(ESTABLISHED, 40004, Some(SocketAddr::new(LO, 6000)), 4),
    ];
    let c = counted([40000, 40005], "40000", &table);
    assert_eq!(
        c,
        Counts {
            ports: 6,
            reserved: 1,
            bound: 1,
            in_use: 1,
            time_wait: 1,
            free: 2,
        }
    );
}

#[test]
fn connections_from_another_source_address_do_not_count() {
    let mut other = sock(ESTABLISHED, 40000, Some(dst()), 1);
    other.addr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    assert_eq!(counted([40000, 40000], "", &[other.clone()]).free, 1);
    // Unless the source is unknown (no route): then every connection counts.
    let reserved = BTreeSet::new();
    assert_eq!(
        count([40000, 40000], &reserved, None, dst(), &[other]).in_use,
        1
    );
}

#[test]
fn mapped_addresses_are_the_same_address() {
    let mut s = sock(ESTABLISHED, 40000, Some(dst()), 1);
    s.addr = IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped());
    s.dst = IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped());
    assert_eq!(counted([40000, 40000], "", &[s]).in_use, 1);
    assert!(!same_addr(LO, IpAddr::V6(Ipv6Addr::LOCALHOST)));
}

fn exhausted(table: &[DiagSock], range: [u16; 2], tw_reuse: u8) -> ConnectPorts {
    Facts {
        source: Some(LO),
        dst: dst(),
        bound_port: None,
        range,
        reserved: String::new(),
        tcp_tw_reuse: Some(tw_reuse),
    }
    .with(counted(range, "", table))
}

#[test]
fn two_ports_both_connected_gives_the_confirmed_fixes() {
    let table = [
        sock(ESTABLISHED, 40000, Some(dst()), 1),
        sock(ESTABLISHED, 40001, Some(dst()), 2),
    ];
    let p = exhausted(&table, [40000, 40001], 2);
    assert_eq!((p.in_use, p.free), (2, 0));
    let f = fixes(&p, &table, &[LO]);
    assert_eq!(
        f[0],
        "widen the port range: sysctl -w net.ipv4.ip_local_port_range=\"32768 60999\" \
         (28230 ports of it free toward 127.0.0.1:5000)"
    );
    assert!(
        f[1].contains("one of 127.0.0.2 with port 0 and IP_BIND_ADDRESS_NO_PORT"),
        "{f:?}"
    );
    assert!(
        f[2].starts_with("reuse connections to 127.0.0.1:5000"),
        "{f:?}"
    );
    // No TIME_WAIT: no tcp_tw_reuse advice.
    assert!(!f.iter().any(|l| l.contains("tcp_tw_reuse")));
}

#[test]
fn time_wait_advice_only_where_tcp_tw_reuse_does_not_already_apply() {
    let table = [sock(TCP_TIME_WAIT, 40000, Some(dst()), 0)];
    for (reuse, advised) in [(0, true), (1, false), (2, false)] {
        let p = exhausted(&table, [40000, 40000], reuse);
        let f = fixes(&p, &table, &[]);
        assert_eq!(
            f.iter().any(|l| l.contains("tcp_tw_reuse=1")),
            advised,
            "tcp_tw_reuse {reuse}: {f:?}"
        );
    }
    // 2 is loopback only.
    let remote = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    assert!(!tw_reuse_applies(Some(2), Some(LO), remote));
    assert!(tw_reuse_applies(Some(2), Some(LO), LO));
    assert!(tw_reuse_applies(Some(1), None, remote));
}

#[test]
fn a_wider_range_is_proposed_only_when_it_has_free_ports() {
    // Every port of 1024-65535 held by a listener: no range helps.
    let table: Vec<DiagSock> = (1024..=65535)
        .map(|p| sock(TCP_LISTEN, p, None, u64::from(p)))
        .collect();
    let p = exhausted(&table, [40000, 40001], 2);
    assert_eq!(p.bound, 2);
    let f = fixes(&p, &table, &[]);
    assert!(!f.iter().any(|l| l.contains("widen")), "{f:?}");
    assert!(
        f.iter()
            .any(|l| l.contains("held by sockets of bind()/listen()"))
    );
}

#[test]
fn a_socket_bound_before_connect_is_told_about_its_port() {
    let table = [sock(ESTABLISHED, 40000, Some(dst()), 1)];
    let mut p = exhausted(&table, [40000, 40001], 2);
    p.bound_port = Some(40000);
    let f = fixes(&p, &table, &[]);
    assert_eq!(f.len(), 1);
    assert!(f[0].contains("IP_BIND_ADDRESS_NO_PORT"));
}

#[test]
fn report_lines_name_the_range_and_the_counts() {
    let table = [
        sock(ESTABLISHED, 40000, Some(dst()), 1),
        sock(TCP_TIME_WAIT, 40001, Some(dst()), 0),
    ];
    let mut p = exhausted(&table, [40000, 40001], 0);
    p.holders.push(ConnectHolder {
        pid: 7,
        comm: "curl".into(),
        cmdline: "curl x".into(),
        sockets: 1,
    });
    assert_eq!(
        lines(&p),
        [
            "local ports 40000-40001 from 127.0.0.1 toward 127.0.0.1:5000: 0 free, 1 in use, \
             1 TIME_WAIT, 0 held by bind()/listen(), 0 reserved (tcp_tw_reuse 0, \
             ip_local_reserved_ports none)",
            "  1 connection(s) held by pid 7 (curl): curl x",
        ]
    );
}
