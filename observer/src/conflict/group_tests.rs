//! Grouping on hand-made holders: alike sockets become one with their count, anything that
//! tells them apart keeps them apart, order of first appearance is kept.

use super::*;
use crate::model::{Named, Overlap, Owner, Proto, Rule};
use std::net::{IpAddr, Ipv4Addr};

fn holder(state: &'static str, inode: u64, time_left_ms: Option<u32>) -> Holder {
    Holder {
        protocol: Proto::Tcp,
        family: "inet",
        state,
        time_left_ms,
        addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 80,
        reuseaddr: Some(true),
        reuseport: Some(false),
        v6only: None,
        bound_dev: None,
        uid: Some(0),
        inode: Some(inode),
        owners: vec![Owner {
            pid: 7,
            comm: "nginx".into(),
            cmdline: "nginx".into(),
            fd: inode as i32,
        }],
        owner_note: None,
        overlap: Named {
            name: Overlap::SameAddress,
            text: "t",
        },
        rule: Named {
            name: Rule::NoReuseFlags,
            text: "t",
        },
        kernel_check: "k",
        certain: true,
        count: 1,
    }
}

#[test]
fn alike_sockets_are_one_group_with_their_count() {
    let mut many: Vec<Holder> = (0..100_000)
        .map(|i| holder("TIME_WAIT", i + 10, Some(60_000 - (i % 1000) as u32)))
        .collect();
    many.insert(0, holder("LISTEN", 1, None));
    let grouped = group(many);
    assert_eq!(grouped.len(), 2);
    assert_eq!(
        (grouped[0].state, grouped[0].count, grouped[0].inode),
        ("LISTEN", 1, Some(1))
    );
    assert_eq!(
        (grouped[1].state, grouped[1].count, grouped[1].inode),
        ("TIME_WAIT", 100_000, Some(10)),
        "the first of the group stands for it"
    );
    assert_eq!(grouped[1].time_left_ms, Some(59_001), "the soonest to go");
}

#[test]
fn what_tells_sockets_apart_keeps_them_apart() {
    let base = holder("ESTABLISHED", 1, None);
    let mut other_owner = holder("ESTABLISHED", 2, None);
    other_owner.owners[0].pid = 8;
    let mut other_flags = holder("ESTABLISHED", 3, None);
    other_flags.reuseport = Some(true);
    let mut other_uid = holder("ESTABLISHED", 4, None);
    other_uid.uid = Some(1000);
    let mut unknown = holder("ESTABLISHED", 5, None);
    unknown.reuseaddr = None;
    let same = holder("ESTABLISHED", 6, None);
    let grouped = group(vec![
        base,
        other_owner,
        other_flags,
        other_uid,
        unknown,
        same,
    ]);
    let inodes: Vec<(Option<u64>, u64)> = grouped.iter().map(|h| (h.inode, h.count)).collect();
    assert_eq!(
        inodes,
        [
            (Some(1), 2),
            (Some(2), 1),
            (Some(3), 1),
            (Some(4), 1),
            (Some(5), 1)
        ]
    );
}
