//! An EPERM from `bind()`: the cgroup BPF programs that can refuse it. `inet_bind_sk` /
//! `inet6_bind` run the socket's cgroup `bind4`/`bind6` programs before any check
//! (`BPF_CGROUP_RUN_PROG_INET_BIND_LOCK`: a program returning 0 makes the call fail with EPERM),
//! and `__inet_bind` / `__inet6_bind` run `post_bind4`/`post_bind6` after the port is taken
//! (`BPF_CGROUP_RUN_PROG_INET4_POST_BIND`: EPERM, the port is released). systemd's
//! `SocketBindAllow=` / `SocketBindDeny=` are such programs.
//!
//! Found by walking from the caller's cgroup up to the root, asking each directory which
//! programs are attached there (`BPF_PROG_QUERY`, flags 0), and the leaf which programs run for
//! it (`BPF_F_QUERY_EFFECTIVE`): each effective program is named with the directory that
//! attached it. Bounded by the depth of the path: never a walk of the host's cgroups.

use crate::model::Refusal;
use std::io;
use std::os::fd::AsRawFd as _;
use std::path::Path;

const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_F_QUERY_EFFECTIVE: u32 = 1;

/// `enum bpf_attach_type`: `BPF_CGROUP_INET4_BIND` and the others.
const INET4_BIND: u32 = 8;
const INET6_BIND: u32 = 9;
const INET4_POST_BIND: u32 = 12;
const INET6_POST_BIND: u32 = 13;

/// Program ids a query returns at most.
const IDS_MAX: usize = 64;

/// A program that runs for the caller's binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    /// The cgroup that attached it, below the cgroup v2 root.
    pub cgroup: String,
    /// `bind4`, `bind6`, `post_bind4` or `post_bind6`.
    pub hook: &'static str,
    pub id: u32,
    /// Its name (`bpf_prog_info.name`), empty when unnamed or unreadable.
    pub name: String,
}

use crate::kernel::bpf;

/// The program ids attached to (or, `effective`, running for) cgroup directory `dir`.
fn query(dir: &Path, attach: u32, effective: bool) -> io::Result<Vec<u32>> {
    let file = std::fs::File::open(dir)?;
    let mut ids = [0u32; IDS_MAX];
    let mut attr = [0u64; 8];
    attr[0] = u64::from(file.as_raw_fd() as u32) | (u64::from(attach) << 32);
    attr[1] = u64::from(if effective { BPF_F_QUERY_EFFECTIVE } else { 0 });
    attr[2] = ids.as_mut_ptr() as u64;
    attr[3] = IDS_MAX as u64;
    bpf(BPF_PROG_QUERY, &mut attr)?;
    let count = (attr[3] as u32 as usize).min(IDS_MAX);
    Ok(ids[..count].to_vec())
}

/// A program's name, by id (`BPF_PROG_GET_FD_BY_ID`, `BPF_OBJ_GET_INFO_BY_FD`).
fn name(id: u32) -> String {
    let mut attr = [0u64; 8];
    attr[0] = u64::from(id);
    let Ok(fd) = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr) else {
        return String::new();
    };
    // SAFETY: a fresh descriptor nobody else owns.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    // `struct bpf_prog_info` up to `name` (offset 64, 16 bytes).
    let mut info = [0u8; 80];
    let mut attr = [0u64; 8];
    attr[0] = u64::from(fd.as_raw_fd() as u32) | ((info.len() as u64) << 32);
    attr[1] = info.as_mut_ptr() as u64;
    if bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).is_err() {
        return String::new();
    }
    let raw = &info[64..80];
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// The directories from `path` (below `root`) up to the root: `/a/b`, `/a`, `/`.
pub fn ancestors(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = path.trim_end_matches('/').to_string();
    while !cur.is_empty() {
        out.push(cur.clone());
        match cur.rfind('/') {
            Some(i) => cur.truncate(i),
            None => break,
        }
    }
    out.push("/".into());
    out
}

/// The bind programs running for a socket of cgroup `path`, each with the cgroup that
/// attached it.
pub fn find(root: &Path, path: &str, v6: bool) -> io::Result<Vec<Attached>> {
    let hooks: [(u32, &'static str); 2] = if v6 {
        [(INET6_BIND, "bind6"), (INET6_POST_BIND, "post_bind6")]
    } else {
        [(INET4_BIND, "bind4"), (INET4_POST_BIND, "post_bind4")]
    };
    let dirs = ancestors(path);
    let dir = |rel: &str| root.join(rel.trim_start_matches('/'));
    let mut out = Vec::new();
    for (attach, hook) in hooks {
        let effective = query(&dir(&dirs[0]), attach, true)?;
        for id in effective {
            // The nearest directory that attached it (a program attached twice runs once for
            // each; the nearest is the one an administrator looks at first).
            let cgroup = dirs
                .iter()
                .find(|d| query(&dir(d), attach, false).is_ok_and(|ids| ids.contains(&id)))
                .cloned()
                .unwrap_or_else(|| "(an ancestor not visible here)".into());
            out.push(Attached {
                cgroup,
                hook,
                id,
                name: name(id),
            });
        }
    }
    Ok(out)
}

/// The EPERM of a bind by a caller in cgroup `path` (`None`: unknown) on an `inet`/`inet6`
/// socket.
pub fn explain(path: Option<&str>, v6: bool) -> Refusal {
    let unexplained = |text: String| Refusal {
        errno: "EPERM".into(),
        rule: crate::model::NOT_EXPLAINED,
        text,
        facts: Vec::new(),
        fixes: Vec::new(),
    };
    let Some(path) = path else {
        return unexplained(
            "the caller's cgroup is not known, so its cgroup bind programs cannot be looked up"
                .into(),
        );
    };
    let Some(root) = crate::cgroup::mount_point() else {
        return unexplained("no cgroup v2 hierarchy is mounted here".into());
    };
    let found = match find(&root, path, v6) {
        Ok(found) => found,
        Err(err) => {
            return unexplained(format!(
                "querying the cgroup bind programs of {path} (BPF_PROG_QUERY): {err}{}",
                if err.raw_os_error() == Some(libc::EPERM) {
                    " (kernels before 6.9 ask for CAP_NET_ADMIN)"
                } else {
                    ""
                }
            ));
        }
    };
    let family = if v6 { "6" } else { "4" };
    if found.is_empty() {
        return Refusal {
            errno: "EPERM".into(),
            rule: "refused-elsewhere",
            text: format!(
                "no cgroup bind{family} or post_bind{family} program runs for {path} now: an LSM \
                 (security_socket_bind) refused the call, or the program was detached since"
            ),
            facts: Vec::new(),
            fixes: Vec::new(),
        };
    }
    let listed: Vec<String> = found
        .iter()
        .map(|a| {
            format!(
                "{} program id {}{} attached at cgroup {}",
                a.hook,
                a.id,
                if a.name.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", a.name)
                },
                a.cgroup
            )
        })
        .collect();
    Refusal {
        errno: "EPERM".into(),
        rule: "cgroup-bpf",
        text: format!(
            "a cgroup BPF program refused the bind: the bind{family} programs run before any \
             check of bind() and a verdict of 0 is EPERM; post_bind{family} programs run after \
             the port is taken and release it (systemd: SocketBindAllow=/SocketBindDeny=)"
        ),
        facts: listed,
        fixes: vec![format!(
            "allow this address and port in the program (systemd: SocketBindAllow= of the unit \
             owning {}), or run the process in a cgroup the program does not cover",
            found[0].cgroup
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_go_up_to_the_root() {
        assert_eq!(
            ancestors("/system.slice/x.service"),
            ["/system.slice/x.service", "/system.slice", "/"]
        );
        assert_eq!(ancestors("/"), ["/"]);
        assert_eq!(ancestors("/a/"), ["/a", "/"]);
    }
}
