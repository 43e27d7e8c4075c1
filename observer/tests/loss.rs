//! Nothing is lost silently: with a ring buffer of one page, a burst of failing binds overflows
//! it, and every bind of the burst is either printed or counted as lost.
//!
//! The kernel counts losses for the whole host (the programs see every bind; the `--netns`
//! filter runs in the collector), so binds by other processes while the small ring is full
//! are counted too and cannot be told apart from ours. To assert an exact account anyway, a
//! *witness* observer with a large ring (which must lose nothing) runs around the whole run of
//! the small one: every record another namespace produced while the small observer was
//! attached reached the witness, so the small observer's share of lost records that are not
//! ours is at most `witness.filtered - small.filtered`. When nothing else bound meanwhile
//! (the usual case) that is 0 and the account is exact: `printed + lost == N`.

// Only part of the shared harness is used here.
#[allow(unused_imports)]
mod common;

use common::{Observer, Sock, Stdout, in_netns};
use serde_json::Value;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Binds in the first burst; doubled (at most [`ROUNDS`] times) while nothing is lost.
const FIRST_BURST: usize = 20_000;
const ROUNDS: usize = 4;
/// The port a listener holds, so that every bind of the burst fails with EADDRINUSE.
const PORT: u16 = 5000;

/// `n` binds of one unbound TCP socket to 127.0.0.1:PORT, raw system calls from this thread.
/// Returns how many failed with EADDRINUSE.
fn burst(n: usize) -> usize {
    // SAFETY: socket(2) with constant arguments; the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: a new descriptor owned here only.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let sa = common::sock::sockaddr_in(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::LOCALHOST,
        PORT,
    ));
    let len = std::mem::size_of_val(&sa) as libc::socklen_t;
    (0..n)
        .filter(|_| {
            // SAFETY: `sa` is a valid sockaddr_in of `len` bytes that outlives the call.
            let rc = unsafe {
                libc::bind(
                    sock.as_raw_fd(),
                    (&sa as *const libc::sockaddr_in).cast(),
                    len,
                )
            };
            rc == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EADDRINUSE)
        })
        .count()
}

/// What one observer printed, counted.
struct Account {
    /// `bind` records (all in the test's namespace: the filter is on it).
    binds: Vec<Value>,
    /// Sum of the `lost` records' `count`.
    lost_records: u64,
    summary: Value,
}

fn account(records: Vec<Value>, netns: u64) -> Account {
    let mut binds = Vec::new();
    let mut lost_records = 0;
    let mut last_total = 0;
    let mut summary = None;
    for r in records {
        match r["type"].as_str() {
            Some("bind") => {
                assert_eq!(r["netns"], netns, "an event of another namespace: {r}");
                binds.push(r);
            }
            Some("lost") => {
                let (count, total) = (r["count"].as_u64().unwrap(), r["total"].as_u64().unwrap());
                assert!(count > 0 && total == last_total + count, "lost record {r}");
                last_total = total;
                lost_records += count;
            }
            Some("summary") => summary = Some(r),
            _ => panic!("unexpected record {r}"),
        }
    }
    let summary = summary.expect("no summary record");
    let n = |key: &str| {
        summary[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key}: {summary}"))
    };
    assert_eq!(n("events"), binds.len() as u64, "{summary}");
    assert_eq!(
        n("lost"),
        lost_records,
        "lost records vs summary: {summary}"
    );
    assert_eq!(n("decode_errors"), 0, "{summary}");
    assert_eq!(n("received"), n("events") + n("filtered"), "{summary}");
    Account {
        binds,
        lost_records,
        summary,
    }
}

/// One round: the witness, then the one-page observer, a burst of `n`, both stopped. Returns
/// the small observer's (printed, lost) for our binds, and how many of its losses may be
/// other namespaces' records.
fn round(c: &common::Caller, n: usize) -> (u64, u64, u64) {
    let netns = c.netns.to_string();
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.to_string();
    let base = [
        "watch",
        "--json",
        "--no-conflicts",
        "--every-call",
        "--netns",
        &netns,
    ];
    let witness = Observer::start(
        &[&base[..], &["--buffer-size", "64M"]].concat(),
        Stdout::Read,
    );
    let small = Observer::start(
        &[&base[..], &["--buffer-size", &page]].concat(),
        Stdout::Read,
    );
    assert_eq!(
        small.start["buffer_bytes"].to_string(),
        page,
        "{}",
        small.start
    );

    assert_eq!(
        burst(n),
        n,
        "every bind of the burst must fail with EADDRINUSE"
    );

    let (records, status, stderr) = small.stop_unchecked(libc::SIGTERM);
    assert!(
        status.success(),
        "small observer: {status:?}; stderr:\n{stderr}"
    );
    let small = account(records, c.netns);
    let (records, status, stderr) = witness.stop_unchecked(libc::SIGTERM);
    assert!(status.success(), "witness: {status:?}; stderr:\n{stderr}");
    let witness = account(records, c.netns);

    // The witness saw the whole burst, and nothing was lost.
    assert_eq!(witness.lost_records, 0, "witness: {}", witness.summary);
    assert_eq!(witness.binds.len(), n, "witness: {}", witness.summary);
    for b in small.binds.iter().chain(&witness.binds) {
        assert_eq!(b["tid"], c.tid, "{b}");
        assert_eq!(b["result"], "EADDRINUSE", "{b}");
    }
    let filtered = |a: &Account| a.summary["filtered"].as_u64().unwrap();
    let others = filtered(&witness)
        .checked_sub(filtered(&small))
        .unwrap_or_else(|| panic!("small {} witness {}", small.summary, witness.summary));
    let printed = small.binds.len() as u64;
    eprintln!(
        "burst {n}: printed {printed}, lost {}, other namespaces' records the small ring may \
         have lost: {others}; small summary {}",
        small.lost_records, small.summary
    );
    (printed, small.lost_records, others)
}

#[test]
fn every_bind_is_printed_or_counted_lost() {
    in_netns("loss-burst", |c| {
        // Held before any observer starts, so the burst is all that happens in the namespace.
        let holder = Sock::tcp4();
        assert_eq!(holder.bind(&format!("127.0.0.1:{PORT}")), 0);
        assert_eq!(holder.listen(), 0);
        let mut n = FIRST_BURST;
        for _ in 0..ROUNDS {
            let (printed, lost, others) = round(c, n);
            let n64 = n as u64;
            assert!(
                (n64..=n64 + others).contains(&(printed + lost)),
                "printed {printed} + lost {lost} != burst {n} (+ at most {others} records of \
                 other namespaces)"
            );
            if lost > 0 {
                assert!(printed > 0, "nothing printed of {n}");
                return;
            }
            n *= 2;
        }
        panic!("a one-page ring buffer lost nothing of bursts up to {n} binds");
    });
}
