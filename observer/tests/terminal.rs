//! The table is safe to print on a terminal, as root with the real binary: a process that
//! names itself with escape sequences (`prctl(PR_SET_NAME)`) and a holder whose command line
//! carries an escape sequence and newlines. Their names reach the table escaped, the layout
//! keeps one line per row, and the rows say which namespace and owner uid they belong to.

#[allow(unused_imports)]
mod common;

use common::proc::{Next, Proc, run_observer};
use common::{BOUND, Stdout, in_netns, no_forks};
use std::io::{BufRead, BufReader, Write as _};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::process::{Command, Stdio};
use std::time::Instant;

/// What the hostile holder names itself (its comm) and puts in its argv.
const EVIL_COMM: &[u8] = b"\x1b[31mEVIL\x07";
const EVIL_ARG: &str = "\x1b]2;owned\x07\nforged row";

/// A character that must never reach the terminal raw.
fn raw_control(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Sets this thread's comm, as a process naming itself does.
fn set_thread_name(name: &[u8]) {
    let mut buf = [0u8; 16];
    buf[..name.len()].copy_from_slice(name);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes from `buf`.
    let rc = unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr() as libc::c_ulong, 0, 0, 0) };
    assert_eq!(rc, 0, "prctl(PR_SET_NAME)");
}

/// A holder: python3 naming itself EVIL_COMM, listening on a free port of the current
/// namespace, with EVIL_ARG among its arguments; it ends when its standard input closes.
fn hostile_holder() -> (u16, std::process::Child) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let code = "import ctypes, socket, sys\n\
                ctypes.CDLL(None).prctl(15, sys.argv[2].encode('latin-1'))\n\
                s = socket.socket()\n\
                s.bind(('127.0.0.1', int(sys.argv[1])))\n\
                s.listen()\n\
                print('ready', flush=True)\n\
                sys.stdin.read()\n";
    let guard = no_forks();
    let mut holder = Command::new("python3")
        .args(["-c", code, &port.to_string()])
        .arg(std::str::from_utf8(EVIL_COMM).unwrap())
        .arg(EVIL_ARG)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3");
    drop(guard);
    let mut ready = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready, "ready\n");
    (port, holder)
}

/// `observer why`'s text answer escapes the holder's names once: an escape shows as `\x1b`,
/// not as the raw byte and not as `\\x1b`.
#[test]
fn why_escapes_the_holder_once() {
    in_netns("terminal-why", |caller| {
        let netns = format!("/proc/{}/task/{}/ns/net", caller.pid, caller.tid);
        let (port, mut holder) = hostile_holder();
        let addr = format!("127.0.0.1:{port}");
        let (status, out, stderr) = run_observer(&["why", &addr, "--netns", &netns]);
        drop(holder.stdin.take());
        holder.wait().unwrap();
        assert_eq!(status.code(), Some(3), "{out:#?} {stderr}");
        let out: Vec<&str> = out.iter().map(|l| l.trim_end_matches('\n')).collect();
        for line in &out {
            assert!(!line.chars().any(raw_control), "raw control in {line:?}");
        }
        let owner = out
            .iter()
            .find(|l| l.contains("held by pid"))
            .unwrap_or_else(|| panic!("{out:#?}"))
            .trim();
        let want = format!("held by pid {} (\\x1b[31mEVIL\\x07): ", holder.id());
        assert!(owner.starts_with(&want), "{owner:?}\nwant {want:?}");
        assert!(
            owner.ends_with(&format!(
                " {port} \\x1b[31mEVIL\\x07 \\x1b]2;owned\\x07\\nforged row"
            )),
            "{owner:?}"
        );
    });
}

#[test]
fn hostile_names_and_command_lines_reach_the_table_escaped() {
    in_netns("terminal", |caller| {
        let netns = caller.netns.to_string();
        let mut observer = Proc::spawn(&["watch", "--netns", &netns], Stdout::Read);
        let deadline = Instant::now() + BOUND;
        match observer.next_line(deadline) {
            Next::Line(header) => assert!(header.starts_with("TIME "), "{header:?}"),
            other => panic!("no table header: {other:?}; {}", observer.stderr()),
        }

        let (port, mut holder) = hostile_holder();

        // The failing caller names itself too.
        set_thread_name(EVIL_COMM);
        let err = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE));

        // Rows up to the holder's owner line (the python listen row, our failing row, its
        // explanation).
        let mut lines = Vec::new();
        while !lines
            .iter()
            .any(|l: &String| l.contains(&format!("held by pid {}", holder.id())))
        {
            match observer.next_line(deadline) {
                Next::Line(line) => lines.push(line.trim_end_matches('\n').to_string()),
                other => panic!("{other:?} after {lines:#?}; {}", observer.stderr()),
            }
        }
        drop(holder.stdin.take());
        holder.wait().unwrap();
        observer.signal(libc::SIGINT);
        let (status, rest, stderr) = observer.wait_end(Instant::now() + BOUND);
        assert!(status.success(), "{status:?}: {stderr}");
        lines.extend(rest.iter().map(|l| l.trim_end_matches('\n').to_string()));

        for line in &lines {
            assert!(!line.chars().any(raw_control), "raw control in {line:?}");
        }
        let escaped_comm = "\\x1b[31mEVIL\\x07";
        let failing: Vec<&String> = lines.iter().filter(|l| l.ends_with("EADDRINUSE")).collect();
        assert_eq!(failing.len(), 1, "{lines:#?}");
        let cols: Vec<&str> = failing[0].split_whitespace().collect();
        // TIME PID COMM UID NETNS OP PROTO REQUESTED BOUND OPTS RESULT
        assert_eq!(
            cols[1..7],
            [
                caller.pid.to_string().as_str(),
                escaped_comm,
                &caller.uid.to_string(),
                &netns,
                "bind",
                "tcp"
            ],
            "{lines:#?}"
        );
        let owner = lines
            .iter()
            .find(|l| l.contains("held by pid"))
            .unwrap()
            .trim();
        let want = format!("held by pid {} ({escaped_comm}): ", holder.id());
        assert!(owner.starts_with(&want), "{owner:?}\nwant {want:?}");
        // (argv[0] is the interpreter's path, which pyenv may have resolved.)
        assert!(
            owner.contains("python3 -c import ctypes, socket, sys\\nctypes.CDLL(None)"),
            "{owner:?}"
        );
        assert!(
            owner.ends_with(&format!(
                " {port} {escaped_comm} \\x1b]2;owned\\x07\\nforged row"
            )),
            "{owner:?}"
        );
        let _ = std::io::stderr().flush();
    });
}
