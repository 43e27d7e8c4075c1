use super::*;
use crate::model::{Endpoint, Flags};
use std::net::Ipv4Addr;

const EADDRINUSE: i32 = 98;

const NETNS: u32 = 4026532000;
const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Step `step` of scenario "s" on socket A: `op` on fd 3 that succeeded, with every option
/// read back as clear.
fn outcome(step: usize, op: &str, requested: Option<u16>, bound: Option<u16>) -> StepOutcome {
    StepOutcome {
        record_type: "step".into(),
        scenario: "s".into(),
        step,
        sock: 'A',
        call: op.into(),
        op: Some(op.into()),
        expect: 0,
        rule: None,
        errno: 0,
        pid: 10,
        tid: 11,
        uid: 0,
        netns: u64::from(NETNS),
        fd: 3,
        ino: 99,
        requested: requested.map(|p| (LO, p)),
        bound: bound.map(|p| (LO, p)),
        // The JSON keys written out here, not taken from the table the check iterates.
        options: [
            "reuseaddr",
            "reuseport",
            "v6only",
            "freebind",
            "transparent",
            "bind_address_no_port",
        ]
        .map(|k| (k.to_string(), false))
        .into(),
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
        remote: crate::model::Remote::Absent,
        flags: Flags([Some(false); 6]),
        bound_dev_if: Some(0),
        sock_uid: Some(0),
        sock_ino: Some(o.ino),
        result: "OK".into(),
        errno: 0,
        hook: "fexit:inet_bind",
        call_id: Some(call_id),
        cgroup: None,
        cgroup_id: 0,
        unreadable: crate::model::Unreadable::NONE,
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

/// The tracepoint backend's view of one successful `bind(127.0.0.1:5000)` and its event.
fn bind_5000() -> (StepOutcome, BindEvent) {
    let bind = outcome(0, "bind", Some(5000), Some(5000));
    let mut e = event(&bind, Op::Bind, 1);
    e.call_id = None;
    e.hook = "tracepoint:syscalls:sys_exit_bind";
    (bind, e)
}

/// The mismatches of the one step, checked as the tracepoint backend (no allocations).
fn mismatches_of(o: &StepOutcome, e: &BindEvent) -> Vec<String> {
    let checked = check(std::slice::from_ref(o), std::slice::from_ref(e), false);
    assert!(checked.extra.is_empty(), "{:?}", checked.extra);
    assert_eq!(
        checked.observer_right(),
        checked.steps[0].mismatches.is_empty()
    );
    checked.steps[0].mismatches.clone()
}

#[test]
fn an_exact_event_passes() {
    let (bind, e) = bind_5000();
    assert_eq!(mismatches_of(&bind, &e), Vec::<String>::new());
}

#[test]
fn a_wrong_errno_is_caught() {
    let (bind, mut e) = bind_5000();
    e.errno = EADDRINUSE;
    e.result = "EADDRINUSE".into();
    assert_eq!(mismatches_of(&bind, &e), ["errno: kernel 0, observer 98"]);
    // And the other way round: the kernel refused, the observer says it worked.
    let mut refused = bind.clone();
    refused.errno = EADDRINUSE;
    refused.bound = None;
    let mut e = event(&refused, Op::Bind, 1);
    e.errno = 0;
    assert_eq!(
        mismatches_of(&refused, &e),
        ["errno: kernel 98, observer 0"]
    );
}

#[test]
fn a_wrong_bound_address_or_port_is_caught() {
    let (bind, mut e) = bind_5000();
    e.bound = Some(Endpoint {
        addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
        port: 5000,
        scope_id: None,
    });
    assert_eq!(
        mismatches_of(&bind, &e),
        ["bound: kernel Some((127.0.0.1, 5000)), observer Some((127.0.0.2, 5000))"]
    );
    e.bound = Some(Endpoint {
        addr: LO,
        port: 5001,
        scope_id: None,
    });
    assert_eq!(
        mismatches_of(&bind, &e),
        ["bound: kernel Some((127.0.0.1, 5000)), observer Some((127.0.0.1, 5001))"]
    );
    e.bound = None;
    assert_eq!(
        mismatches_of(&bind, &e),
        ["bound: kernel Some((127.0.0.1, 5000)), observer None"]
    );
}

#[test]
fn a_wrong_requested_address_pid_uid_or_inode_is_caught() {
    let (bind, mut e) = bind_5000();
    e.requested = Some(Requested::Inet(Endpoint {
        addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        port: 5000,
        scope_id: None,
    }));
    e.pid = 12;
    e.uid = 65534;
    e.sock_ino = None;
    assert_eq!(
        mismatches_of(&bind, &e),
        [
            "pid: kernel 10, observer 12",
            "uid: kernel 0, observer 65534",
            "sock_ino: kernel Some(99), observer None",
            "requested: kernel Some((127.0.0.1, 5000)), observer Some((0.0.0.0, 5000))",
        ]
    );
}

#[test]
fn a_wrong_or_unknown_flag_is_caught() {
    let (mut bind, mut e) = bind_5000();
    bind.options.insert("reuseaddr".into(), true);
    assert_eq!(
        mismatches_of(&bind, &e),
        ["reuseaddr: kernel true, observer Some(false)"]
    );
    e.flags.set(Opt::ReuseAddr, Some(true));
    e.flags.set(Opt::BindAddressNoPort, Some(true));
    assert_eq!(
        mismatches_of(&bind, &e),
        ["bind_address_no_port: kernel false, observer Some(true)"]
    );
    // The observer could not read a flag (no BTF for it): not a pass.
    e.flags.set(Opt::BindAddressNoPort, None);
    assert_eq!(
        mismatches_of(&bind, &e),
        ["bind_address_no_port: kernel false, observer None"]
    );
}

#[test]
fn an_option_missing_from_the_workload_or_unknown_to_the_event_is_caught() {
    let (mut bind, e) = bind_5000();
    bind.options.remove("freebind");
    assert_eq!(
        mismatches_of(&bind, &e),
        ["freebind: the workload did not read it, observer Some(false)"]
    );
    bind.options.insert("freebind".into(), false);
    bind.options.insert("ipv6_autoflowlabel".into(), true);
    assert_eq!(
        mismatches_of(&bind, &e),
        ["ipv6_autoflowlabel: an option the event has no flag for"]
    );
}

#[test]
fn a_missing_event_is_caught() {
    let (bind, e) = bind_5000();
    let checked = check(std::slice::from_ref(&bind), &[], false);
    assert_eq!(checked.steps[0].mismatches, ["no event"]);
    assert!(checked.steps[0].event.is_none());
    assert!(!checked.observer_right());
    // An event of another thread, fd or op is not this step's.
    for wrong in [
        BindEvent {
            tid: 12,
            ..e.clone()
        },
        BindEvent {
            fd: Some(4),
            ..e.clone()
        },
        BindEvent {
            op: Op::Listen,
            ..e.clone()
        },
        BindEvent {
            netns: Some(NETNS + 1),
            ..e.clone()
        },
    ] {
        let checked = check(
            std::slice::from_ref(&bind),
            std::slice::from_ref(&wrong),
            false,
        );
        assert_eq!(checked.steps[0].mismatches, ["no event"], "{wrong:?}");
        assert!(!checked.observer_right());
    }
}

#[test]
fn an_extra_event_in_the_namespace_is_caught() {
    let (bind, e) = bind_5000();
    // The same call reported twice: the second is an extra.
    let checked = check(std::slice::from_ref(&bind), &[e.clone(), e.clone()], false);
    assert!(checked.steps[0].mismatches.is_empty());
    assert_eq!(checked.extra, std::slice::from_ref(&e));
    assert!(!checked.observer_right());
    // An event of a namespace the workload did not use is none of the check's business.
    let other = BindEvent {
        netns: Some(NETNS + 1),
        ..e.clone()
    };
    let checked = check(std::slice::from_ref(&bind), &[e.clone(), other], false);
    assert!(checked.extra.is_empty());
    assert!(checked.observer_right());
    // Nor is another process's in a namespace whose inode the workload's once had (another
    // demo's, running at the same time).
    let stranger = BindEvent {
        pid: e.pid + 1,
        tid: e.pid + 1,
        ..e.clone()
    };
    let checked = check(std::slice::from_ref(&bind), &[e, stranger], false);
    assert!(checked.extra.is_empty());
}

#[test]
fn unobserved_steps_need_no_event() {
    let mut socket = outcome(0, "socket", None, None);
    socket.op = None;
    let checked = check(std::slice::from_ref(&socket), &[], false);
    assert!(checked.observer_right());
    assert!(checked.steps[0].event.is_none());
}

// The explanation of a failed call against the declared rule.

use crate::model::{Conflict, Holder, Refusal, Rule};
use crate::sink::{CollectSink, Sink as _};

/// A bind to 127.0.0.1:5000 that failed with `errno`, declared to be explained by `rule`, and
/// its event (without an explanation yet).
fn failed_bind(errno: i32, rule: &str) -> (StepOutcome, BindEvent) {
    let mut o = outcome(0, "bind", Some(5000), None);
    o.expect = errno;
    o.errno = errno;
    o.rule = Some(rule.to_string());
    let mut e = event(&o, Op::Bind, 7);
    e.seq = 1;
    e.errno = errno;
    e.result = crate::errno::name(errno);
    (o, e)
}

/// A listening socket on 0.0.0.0:5000 in the way, by `rule`.
fn in_the_way(rule: Rule) -> Conflict {
    let holder = Holder::wildcard_listener(rule);
    Conflict {
        verdict: "in_use",
        holders: vec![holder],
        fixes: Vec::new(),
        ephemeral: None,
        notes: Vec::new(),
        refusal: None,
        sharing: None,
        connect: None,
    }
}

fn refused(errno: &'static str, rule: &'static str) -> Conflict {
    Conflict::refused(Refusal {
        errno: errno.into(),
        rule,
        text: String::new(),
        facts: Vec::new(),
        fixes: Vec::new(),
    })
}

fn checked_one(o: &StepOutcome, events: &[BindEvent]) -> StepCheck {
    let checked = check(std::slice::from_ref(o), events, false);
    checked.steps.into_iter().next().expect("one step")
}

#[test]
fn the_declared_rule_in_the_way_passes() {
    let (o, mut e) = failed_bind(EADDRINUSE, "reuseaddr-vs-listener");
    e.conflict = Some(in_the_way(Rule::ReuseaddrVsListener));
    let s = checked_one(&o, &[e]);
    assert!(s.observer_right(), "{:?}", s.explanation_mismatches);
    assert!(s.explanation_declared());
    assert!(s.explanation.is_some());
}

#[test]
fn a_wrong_rule_is_a_mismatch() {
    let (o, mut e) = failed_bind(EADDRINUSE, "reuseaddr-vs-listener");
    e.conflict = Some(in_the_way(Rule::NoReuseFlags));
    let s = checked_one(&o, &[e]);
    assert!(
        s.event_right(),
        "the event itself is right: {:?}",
        s.mismatches
    );
    assert!(!s.observer_right());
    assert_eq!(
        s.explanation_mismatches,
        ["explanation: rule no-reuse-flags, declared reuseaddr-vs-listener"]
    );
    // A refusal naming another rule, too.
    let (o, mut e) = failed_bind(libc::EACCES, "privileged-port");
    e.conflict = Some(refused("EACCES", "refused-elsewhere"));
    assert_eq!(
        checked_one(&o, &[e]).explanation_mismatches,
        ["explanation: rule refused-elsewhere, declared privileged-port"]
    );
}

#[test]
fn a_refusal_by_the_declared_rule_passes() {
    let (o, mut e) = failed_bind(libc::EADDRNOTAVAIL, "address-not-local");
    e.conflict = Some(refused("EADDRNOTAVAIL", "address-not-local"));
    let s = checked_one(&o, &[e]);
    assert!(s.observer_right(), "{:?}", s.explanation_mismatches);
}

#[test]
fn a_missing_explanation_is_a_mismatch() {
    let (o, e) = failed_bind(EADDRINUSE, "no-reuse-flags");
    let s = checked_one(&o, &[e]);
    assert!(s.event_right());
    assert_eq!(
        s.explanation_mismatches,
        ["no explanation (declared rule no-reuse-flags)"]
    );
    // Nothing in the way (the holder had gone) names no rule.
    let (o, mut e) = failed_bind(EADDRINUSE, "no-reuse-flags");
    e.conflict = Some(Conflict {
        verdict: "free",
        ..in_the_way(Rule::NoReuseFlags)
    });
    e.conflict.as_mut().expect("set").holders.clear();
    assert_eq!(
        checked_one(&o, &[e]).explanation_mismatches,
        ["explanation: verdict free, declared rule no-reuse-flags"]
    );
    // No event at all: the explanation is missing with it.
    let (o, _) = failed_bind(EADDRINUSE, "no-reuse-flags");
    let s = checked_one(&o, &[]);
    assert_eq!(s.mismatches, ["no event"]);
    assert_eq!(s.explanation_mismatches, ["no explanation (no event)"]);
}

#[test]
fn an_explanation_still_pending_at_the_end_is_a_mismatch() {
    let (o, mut e) = failed_bind(EADDRINUSE, "no-reuse-flags");
    e.conflict = Some(Conflict::with_note("pending", "looking".into()));
    assert!(!is_final(e.conflict.as_ref()));
    assert_eq!(
        checked_one(&o, &[e]).explanation_mismatches,
        ["the explanation never arrived (still pending at the end; declared rule no-reuse-flags)"]
    );
}

#[test]
fn a_late_explanation_that_arrives_is_accepted() {
    // The event goes out pending; its explanation record follows, as the collector writes
    // them, and the demo's sink puts it in place.
    let (o, mut e) = failed_bind(EADDRINUSE, "reuseport-same-uid");
    e.conflict = Some(Conflict::with_note("pending", "looking".into()));
    let mut sink = CollectSink::default();
    sink.event(&e).expect("event");
    assert!(!is_final(
        last_event_of(&o, &sink.events).and_then(|e| e.conflict.as_ref())
    ));
    sink.explanation(&crate::model::ExplanationRecord {
        record_type: "explanation",
        time: String::new(),
        of: e.seq,
        event_time: String::new(),
        conflict: in_the_way(Rule::ReuseportSameUid),
    })
    .expect("explanation");
    let last = last_event_of(&o, &sink.events).expect("its event");
    assert!(is_final(explanation_of(&sink.events, last)));
    let s = checked_one(&o, &sink.events);
    assert!(s.observer_right(), "{:?}", s.explanation_mismatches);
}

#[test]
fn a_retry_is_explained_by_the_failure_it_repeats() {
    let (first, mut e1) = failed_bind(EADDRINUSE, "no-reuse-flags");
    e1.conflict = Some(in_the_way(Rule::NoReuseFlags));
    let mut o2 = first.clone();
    o2.step = 1;
    let mut e2 = e1.clone();
    e2.seq = 2;
    e2.conflict = None;
    e2.repeat_of = Some(1);
    let checked = check(&[first, o2], &[e1, e2], false);
    assert!(
        checked.observer_right(),
        "{:?}",
        checked.steps[1].explanation_mismatches
    );
    assert!(checked.steps[1].explanation.is_some());
}

#[test]
fn a_step_declaring_no_rule_is_not_judged() {
    let (mut o, e) = failed_bind(EADDRINUSE, "no-reuse-flags");
    o.rule = None;
    let s = checked_one(&o, &[e]);
    assert!(!s.explanation_declared());
    assert!(s.observer_right());
}

/// A connect's `exhausted` answer names the used-up range as its rule; an `exhausted`
/// verdict without the range report names none.
#[test]
fn an_exhausted_range_at_connect_is_its_rule() {
    let range = crate::model::ConnectPorts::two_ports_in_use(5000);
    let mut c = Conflict::with_note("exhausted", "the range is used up".into());
    assert_eq!(
        judge_explanation(PORTS_EXHAUSTED, Some(&c)),
        ["explanation: verdict exhausted, declared rule ephemeral-ports-exhausted"]
    );
    c.connect = Some(Box::new(range));
    assert!(judge_explanation(PORTS_EXHAUSTED, Some(&c)).is_empty());
    assert_eq!(
        judge_explanation("no-reuse-flags", Some(&c)),
        ["explanation: rule ephemeral-ports-exhausted, declared no-reuse-flags"]
    );
}

/// A UDP connect's autobind (a port-0 bind) that found no port: verdict `ephemeral` with
/// nothing free is the range used up; with a port free it names no rule.
#[test]
fn a_used_up_range_at_a_port_zero_bind_is_its_rule() {
    let mut c = Conflict::with_note("ephemeral", "range".into());
    c.notes.clear();
    c.ephemeral = Some(crate::model::Ephemeral {
        range: [40000, 40001],
        reserved: String::new(),
        reserved_in_range: 0,
        in_use: 2,
        free: 0,
    });
    assert!(judge_explanation(PORTS_EXHAUSTED, Some(&c)).is_empty());
    c.ephemeral.as_mut().unwrap().free = 1;
    assert_eq!(
        judge_explanation(PORTS_EXHAUSTED, Some(&c)),
        ["explanation: verdict ephemeral, declared rule ephemeral-ports-exhausted"]
    );
}
