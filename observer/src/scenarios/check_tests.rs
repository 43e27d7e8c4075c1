use super::*;
use crate::model::{Endpoint, Flags};
use std::net::Ipv4Addr;

const NETNS: u32 = 4026532000;
const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Step `step` of scenario "s" on socket A: `op` on fd 3, kernel result `errno`.
fn outcome(step: usize, op: &str, requested: Option<u16>, bound: Option<u16>) -> StepOutcome {
    StepOutcome {
        record_type: "step".into(),
        scenario: "s".into(),
        step,
        sock: 'A',
        call: op.into(),
        op: Some(op.into()),
        expect: 0,
        errno: 0,
        pid: 10,
        tid: 11,
        uid: 0,
        netns: u64::from(NETNS),
        fd: 3,
        ino: 99,
        requested: requested.map(|p| (LO, p)),
        bound: bound.map(|p| (LO, p)),
        options: Default::default(),
    }
}

/// The kernel-function event for `o`, in call `call_id`.
fn event(o: &StepOutcome, op: Op, call_id: u64) -> BindEvent {
    let ep = |p: (IpAddr, u16)| Endpoint {
        addr: p.0,
        port: p.1,
        scope_id: None,
    };
    BindEvent {
        record_type: "bind",
        seq: 0,
        time: String::new(),
        op,
        pid: o.pid,
        tid: o.tid,
        uid: o.uid,
        comm: "scn".into(),
        netns: Some(NETNS),
        family: Some("inet".into()),
        protocol: Some("tcp".into()),
        fd: Some(o.fd),
        requested: o.requested.map(|r| Requested::Inet(ep(r))),
        bound: o.bound.map(ep),
        flags: Flags::default(),
        bound_dev_if: Some(0),
        sock_uid: Some(0),
        sock_ino: Some(o.ino),
        result: "OK".into(),
        errno: 0,
        hook: "fexit:inet_bind",
        call_id: Some(call_id),
        cgroup: None,
        cgroup_id: 0,
        repeat_of: None,
        repeat_time: None,
        repeat_flags_differ: false,
        conflict: None,
    }
}

/// A port allocation asking for `asked` that got `got`.
fn get_port(o: &StepOutcome, call_id: u64, asked: u16, got: u16) -> BindEvent {
    let mut g = event(o, Op::GetPort, call_id);
    g.requested = Some(Requested::Inet(Endpoint {
        addr: LO,
        port: asked,
        scope_id: None,
    }));
    g.bound = Some(Endpoint {
        addr: LO,
        port: got,
        scope_id: None,
    });
    g.hook = "fexit:inet_csk_get_port";
    g
}

#[test]
fn port_zero_bind_with_its_allocation_passes() {
    let bind = outcome(0, "bind", Some(0), Some(40000));
    let events = [get_port(&bind, 7, 0, 40000), event(&bind, Op::Bind, 7)];
    let checked = check(std::slice::from_ref(&bind), &events, true);
    assert!(
        checked.observer_right(),
        "{:?}",
        checked.steps[0].mismatches
    );
    assert_eq!(checked.steps[0].get_port.len(), 1);
}

#[test]
fn port_zero_bind_without_allocation_fails_under_kernel_function_backends() {
    let bind = outcome(0, "bind", Some(0), Some(40000));
    let events = [event(&bind, Op::Bind, 7)];
    let checked = check(std::slice::from_ref(&bind), &events, true);
    assert_eq!(
        checked.steps[0].mismatches,
        ["no get_port event for port 0"]
    );
    // The tracepoint backend reports no allocations: nothing is asked of it.
    assert!(check(std::slice::from_ref(&bind), &events, false).observer_right());
}

#[test]
fn allocation_of_another_port_or_call_is_wrong() {
    let bind = outcome(0, "bind", Some(0), Some(40000));
    let events = [get_port(&bind, 7, 0, 40001), event(&bind, Op::Bind, 7)];
    let checked = check(std::slice::from_ref(&bind), &events, true);
    assert_eq!(
        checked.steps[0].mismatches,
        ["get_port port: kernel Some(40000), observer Some(40001)"]
    );
    // In another call: not linked, so the bind lacks one and the allocation is an extra.
    let events = [get_port(&bind, 6, 0, 40000), event(&bind, Op::Bind, 7)];
    let checked = check(std::slice::from_ref(&bind), &events, true);
    assert_eq!(checked.extra.len(), 1);
    assert!(!checked.observer_right());
}

#[test]
fn listen_autobind_needs_an_allocation_but_listen_after_bind_does_not() {
    let listen = outcome(0, "listen", None, Some(40000));
    let events = [event(&listen, Op::Listen, 3)];
    let checked = check(std::slice::from_ref(&listen), &events, true);
    assert_eq!(
        checked.steps[0].mismatches,
        ["no get_port event for port 0"]
    );

    let bind = outcome(0, "bind", Some(5000), Some(5000));
    let listen = outcome(1, "listen", None, Some(5000));
    let steps = [bind.clone(), listen.clone()];
    let events = [
        get_port(&bind, 1, 5000, 5000),
        event(&bind, Op::Bind, 1),
        get_port(&listen, 2, 5000, 5000),
        event(&listen, Op::Listen, 2),
    ];
    let checked = check(&steps, &events, true);
    assert!(checked.observer_right(), "{:?}", checked.steps);
}
