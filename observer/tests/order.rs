//! Events leave in the order the calls were made, each explained failure with its
//! explanation, as root with the real binary: the seed program of the notes
//! (`shared/seeds/002_*.txt`, its third listing: two SO_REUSEADDR servers on port 6666, on
//! 0.0.0.0 and 127.0.0.1), compiled from the note as it stands with one more call to a
//! non-local address, and retries pointing at the explanation they repeat.

#[allow(unused_imports)]
mod common;

use common::{Observer, Sock, in_netns, no_forks};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The note, beside this repository as `shared/` is laid out (CI copies it there too).
fn note() -> PathBuf {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/seeds");
    let found = std::fs::read_dir(&seeds)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (the notes must lie beside the repository)",
                seeds.display()
            )
        })
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("002_"))
        });
    found.unwrap_or_else(|| panic!("no 002_* note in {}", seeds.display()))
}

/// The note's third C listing, made compilable (the note's text puts spaces inside `#include
/// < ... >`), with a last call on an address no interface has, and a wait on its standard
/// input before it exits, so that its listener is still there when the lookup looks.
fn third_listing(text: &str) -> String {
    let starts: Vec<usize> = text.match_indices("#include").map(|(i, _)| i).collect();
    // Each listing starts with a run of #include lines: the first of each run.
    let mut listings = Vec::new();
    for (n, &i) in starts.iter().enumerate() {
        let prev_line_is_include = n > 0 && text[starts[n - 1]..i].lines().count() <= 1;
        if !prev_line_is_include {
            listings.push(i);
        }
    }
    assert!(listings.len() >= 3, "the note has three listings");
    let body = &text[listings[2]..];
    let main = body.find("int main").expect("the listing has a main");
    let end = main + body[main..].find("\n}").expect("main ends") + 2;
    let mut code: String = body[..end]
        .lines()
        .map(|l| {
            if l.starts_with("#include") {
                l.replace(' ', "").replace("#include", "#include ")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let last = code.rfind("}").unwrap();
    code.insert_str(
        last,
        "start_server ( inet_addr ( \"192.168.8.246\" ) ) ;\nfflush ( stdout ) ;\ngetchar ( ) ;\n",
    );
    code
}

fn compile(code: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("observer-order-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("seed.c");
    std::fs::write(&src, code).unwrap();
    let bin = dir.join("seed");
    let out = std::process::Command::new("gcc")
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("running gcc");
    assert!(
        out.status.success(),
        "gcc failed on the note's listing:\n{}\n{code}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

fn summary_of(e: &Value) -> (String, String, String) {
    let addr = match (&e["requested"], &e["bound"]) {
        (Value::Object(r), _) => format!("{}:{}", r["addr"].as_str().unwrap(), r["port"]),
        (_, Value::Object(b)) => format!("{}:{}", b["addr"].as_str().unwrap(), b["port"]),
        _ => "-".into(),
    };
    (
        e["op"].as_str().unwrap().to_string(),
        addr,
        e["result"].as_str().unwrap().to_string(),
    )
}

#[test]
fn the_seed_program_reads_in_call_order_with_its_explanation() {
    let code = third_listing(&std::fs::read_to_string(note()).unwrap());
    assert!(
        code.contains("SO_REUSEADDR"),
        "the third listing sets SO_REUSEADDR:\n{code}"
    );
    let bin = compile(&code);
    in_netns("seed-order", |c| {
        let mut obs = Observer::watch(c, &[]);
        let mut child = {
            let _g = no_forks();
            std::process::Command::new(&bin)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("running the seed program")
        };
        let events = obs.take(4);
        // Done looking: let it exit.
        drop(child.stdin.take());
        let out = child.wait_with_output().expect("the seed program ends");
        let printed = String::from_utf8_lossy(&out.stdout);
        // What the program itself says: the second server and the non-local one failed.
        assert_eq!(
            printed.lines().collect::<Vec<_>>(),
            [
                "bind socket error: Address already in use(errno: 98)",
                "bind socket error: Cannot assign requested address(errno: 99)"
            ]
        );
        let got: Vec<(String, String, String)> = events.iter().map(summary_of).collect();
        let want = [
            ("bind", "0.0.0.0:6666", "OK"),
            ("listen", "0.0.0.0:6666", "OK"),
            ("bind", "127.0.0.1:6666", "EADDRINUSE"),
            ("bind", "192.168.8.246:6666", "EADDRNOTAVAIL"),
        ];
        let want: Vec<(String, String, String)> = want
            .iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect();
        assert_eq!(got, want, "in call order");
        let seqs: Vec<&Value> = events.iter().map(|e| &e["seq"]).collect();
        assert_eq!(seqs, [1, 2, 3, 4]);
        // On a loaded machine the lookup can take longer than events are held for: then the
        // event says `pending`, the events after it still follow in call order, and the
        // answer comes as its own record naming event 3.
        let late = events[2]["conflict"]["verdict"] == "pending";
        let explanation;
        let conflict = if late {
            explanation = obs.take_explanation(3);
            &explanation["conflict"]
        } else {
            &events[2]["conflict"]
        };
        assert_eq!(conflict["verdict"], "in_use", "{conflict}");
        assert_eq!(conflict["holders"][0]["state"], "LISTEN", "{conflict}");
        assert_eq!(conflict["holders"][0]["addr"], "0.0.0.0", "{conflict}");
        assert_eq!(conflict["holders"][0]["port"], 6666, "{conflict}");
        // The EADDRNOTAVAIL has its own explanation (tests/refusals.rs asserts it whole),
        // late too on a loaded machine.
        let late4 = events[3]["conflict"]["verdict"] == "pending";
        let refusal = if late4 {
            obs.take_explanation(4)["conflict"]["refusal"].clone()
        } else {
            events[3]["conflict"]["refusal"].clone()
        };
        assert_eq!(refusal["rule"], "address-not-local", "{refusal}");
        let summary = obs.stop();
        assert_eq!(
            summary["explanations_late"],
            u64::from(late) + u64::from(late4),
            "{summary}"
        );
        assert_eq!(summary["conflict_lookups"], 1, "{summary}");
    });
}

#[test]
fn a_retry_points_at_the_explanation_it_repeats() {
    in_netns("retry-points", |c| {
        let mut obs = Observer::watch(c, &[]);
        let holder = Sock::tcp4();
        assert_eq!(holder.bind("127.0.0.1:6700"), 0);
        assert_eq!(holder.listen(), 0);
        let first = Sock::tcp4();
        assert_eq!(first.bind("127.0.0.1:6700"), libc::EADDRINUSE);
        let retry = Sock::tcp4();
        assert_eq!(retry.bind("127.0.0.1:6700"), libc::EADDRINUSE);
        let other_port = Sock::tcp4();
        assert_eq!(other_port.bind("127.0.0.1:6700"), libc::EADDRINUSE);
        let events = obs.take(5);
        if events[2]["conflict"]["verdict"] == "pending" {
            // A loaded machine: the answer follows as its own record (see above).
            let x = obs.take_explanation(3);
            assert_eq!(x["conflict"]["verdict"], "in_use", "{x}");
        } else {
            assert_eq!(events[2]["conflict"]["verdict"], "in_use", "{}", events[2]);
        }
        for e in &events[3..5] {
            assert_eq!(e["repeat_of"], 3, "{e}");
            assert!(e.get("conflict").is_none(), "{e}");
            assert!(e.get("repeat_flags_differ").is_none(), "{e}");
        }
        let summary = obs.stop();
        assert_eq!(summary["conflict_repeats"], 2, "{summary}");
        assert_eq!(summary["conflict_lookups"], 1, "{summary}");
    });
}
