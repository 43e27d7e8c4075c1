//! The caller: a named test thread moved into a private network namespace (only `lo` up, set
//! up by the library's `observer::netns`), and the identity its events carry.

use super::require_root;
use ::observer::netns;

/// Who makes the calls: the identity fields every event of this caller carries.
#[derive(Debug, Clone)]
pub struct Caller {
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    /// The thread name, truncated to 15 bytes as the kernel's `comm` is.
    pub comm: String,
    /// Inode of the caller's network namespace.
    pub netns: u64,
}

/// Runs `body` on a new thread named `name`, inside a new network namespace where only `lo`
/// (127.0.0.0/8 and ::1) is up. A panic in `body` fails the test with its own message.
pub fn in_netns<R: Send>(name: &str, body: impl FnOnce(&Caller) -> R + Send) -> R {
    require_root();
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name(name.to_string())
            .spawn_scoped(scope, || {
                let ino = netns::enter_private().expect("entering a private network namespace");
                let caller = Caller {
                    pid: std::process::id(),
                    // SAFETY: gettid has no preconditions.
                    tid: unsafe { libc::gettid() } as u32,
                    // SAFETY: getuid has no preconditions.
                    uid: unsafe { libc::getuid() },
                    comm: truncate_comm(name),
                    netns: ino,
                };
                body(&caller)
            })
            .expect("spawning the test thread");
        match handle.join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// The kernel keeps 15 bytes of a thread name (`TASK_COMM_LEN` - 1).
fn truncate_comm(name: &str) -> String {
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}
