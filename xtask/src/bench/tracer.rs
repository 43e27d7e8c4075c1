//! Starting and stopping what watches the load: nothing, the observer, or bpftrace. Each runs
//! pinned to the CPU the load does not use, writes to a file, and is waited for until it says
//! it is attached (the observer's `start` record, bpftrace's `BEGIN` line) before any load runs.

use anyhow::{Context as _, Result, bail};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The CPU the watcher runs on; the load runs on the other one.
pub const TRACER_CPU: usize = 1;
/// How long a watcher may take to attach before the bench gives up.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);

/// The equivalent capture in bpftrace: what bindsnoop-style tools do.
const BPFTRACE_SCRIPT: &str = r#"
tracepoint:syscalls:sys_enter_bind { @addr[tid] = args->umyaddr; }
tracepoint:syscalls:sys_exit_bind /@addr[tid]/ {
  $sa = (struct sockaddr_in *)@addr[tid];
  printf("%d %s %d %d\n", pid, comm, ($sa->sin_port >> 8) | (($sa->sin_port & 0xff) << 8), args->ret);
  delete(@addr[tid]);
}
BEGIN { printf("ready\n"); }
"#;

/// Empty programs on the tracepoints the observer uses: what the hook itself costs, the floor
/// under anything attached there.
const FLOOR_SCRIPT: &str = r#"
tracepoint:syscalls:sys_exit_bind { }
tracepoint:syscalls:sys_exit_listen { }
tracepoint:syscalls:sys_exit_connect { }
BEGIN { printf("ready\n"); }
"#;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Tracer {
    None,
    /// Empty programs on the observer's tracepoints (through bpftrace).
    Floor,
    /// The observer as it runs by default: identical repeats of a failure folded.
    Observer,
    /// The observer with `--every-call`: one record per call.
    EveryCall,
    Bpftrace,
}

impl Tracer {
    /// One of the observer's two modes.
    pub fn is_observer(self) -> bool {
        matches!(self, Tracer::Observer | Tracer::EveryCall)
    }

    pub fn label(self) -> &'static str {
        match self {
            Tracer::None => "no observer",
            Tracer::Floor => "empty programs (floor)",
            Tracer::Observer => "observer (folding)",
            Tracer::EveryCall => "observer --every-call",
            Tracer::Bpftrace => "bpftrace",
        }
    }
}

/// A watcher that is attached.
pub struct Running {
    child: Child,
    pub output: PathBuf,
    /// Shares the child's file offset (same open file): where its output ends.
    out: std::fs::File,
    /// From spawn to attached.
    pub attach: Duration,
}

/// What a watcher left when it ended.
pub struct Stopped {
    /// User CPU time: the watcher's own work.
    pub user: Duration,
    /// System CPU time: the kernel's work on its behalf (mostly writing its output).
    pub system: Duration,
    /// Peak resident set size.
    pub max_rss_bytes: u64,
    pub output: PathBuf,
}

/// Pins the child to `cpu` between fork and exec.
pub fn pinned(cmd: &mut Command, cpu: usize) -> &mut Command {
    // SAFETY: only async-signal-safe calls (sched_setaffinity) run between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// Starts `tracer` writing to a file in `dir`, and waits until it is attached. `room` bytes of
/// the file are written before it starts and it overwrites them (see `prefill`).
pub fn start(tracer: Tracer, observer: &Path, dir: &Path, room: u64) -> Result<Option<Running>> {
    let (mut cmd, output, ready): (Command, PathBuf, &str) = match tracer {
        Tracer::None => return Ok(None),
        Tracer::Observer | Tracer::EveryCall => {
            let mut cmd = Command::new(observer);
            // Only the load's calls are written: other processes' binds on this shared machine
            // are counted as filtered, so the account of the load's calls stays exact.
            cmd.args(["watch", "--json", "--comm", "bench-load"]);
            if tracer == Tracer::EveryCall {
                cmd.arg("--every-call");
            }
            (cmd, dir.join("observer.jsonl"), "\"type\":\"start\"")
        }
        Tracer::Bpftrace | Tracer::Floor => {
            let (name, text) = if tracer == Tracer::Floor {
                ("floor.bt", FLOOR_SCRIPT)
            } else {
                ("bind.bt", BPFTRACE_SCRIPT)
            };
            let script = dir.join(name);
            std::fs::write(&script, text).context("writing the bpftrace script")?;
            let mut cmd = Command::new("bpftrace");
            cmd.arg(&script);
            (cmd, dir.join("bpftrace.out"), "ready")
        }
    };
    prefill(&output, room)?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&output)
        .with_context(|| format!("opening {}", output.display()))?;
    let out = file.try_clone().context("sharing the output file")?;
    let began = Instant::now();
    let child = pinned(&mut cmd, TRACER_CPU)
        .stdout(file)
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", tracer.label()))?;
    let mut running = Running {
        child,
        output,
        out,
        attach: Duration::ZERO,
    };
    // The watcher writes to a file, so readiness is polled (in the first bytes: the ready line
    // comes first); the bound keeps a stuck watcher from hanging the bench.
    loop {
        if head(&running.output).contains(ready) {
            running.attach = began.elapsed();
            return Ok(Some(running));
        }
        if let Some(status) = running.child.try_wait()? {
            bail!("{} exited before attaching ({status})", tracer.label());
        }
        if began.elapsed() > ATTACH_TIMEOUT {
            let _ = stop(running);
            bail!(
                "{} did not attach within {ATTACH_TIMEOUT:?}",
                tracer.label()
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The first 64 KiB of `path`, as text.
fn head(path: &Path) -> String {
    use std::io::Read as _;
    let mut buf = vec![0u8; 64 << 10];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut buf))
        .unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Writes `bytes` of zeros to a new `path`, for the watcher to overwrite.
///
/// These Firecracker VMs back guest memory lazily and take freed pages back within about two
/// seconds (free page reporting), so the first write to each new page-cache page costs a host
/// fault: dd writes about 370 MB/s to a new file and 4 GB/s over a file it wrote just
/// before. Writing into fresh pages would make the watcher's CPU time measure the hypervisor.
/// Overwriting pages that are already in the page cache, as a long-running observer writing
/// to a log on a bare-metal host effectively does, measures the watcher. (The VMs also reclaim
/// idle page cache within seconds, so some of these pages are gone again when the watcher
/// reaches them; the observer writes whole pages into a file, so that costs it no disk read.)
fn prefill(path: &Path, bytes: u64) -> Result<()> {
    use std::io::Write as _;
    let mut file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0;
    while written < bytes {
        file.write_all(&chunk)
            .with_context(|| format!("writing {}", path.display()))?;
        written += chunk.len() as u64;
    }
    // Clean pages: dirty ones would still be going to disk during the run, and the kernel
    // throttles a writer while that much is dirty (the first runs lost events to it).
    file.sync_all()
        .with_context(|| format!("syncing {}", path.display()))
}

/// Ends a watcher with SIGINT (the observer then drains and writes its summary) and collects
/// its resource use.
pub fn stop(running: Running) -> Result<Stopped> {
    let pid = running.child.id() as libc::pid_t;
    // SAFETY: `pid` is our own child, not yet waited for, so it cannot have been reused.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child; `status` and `usage` are valid for writes.
    if unsafe { libc::wait4(pid, &mut status, 0, &mut usage) } != pid {
        bail!("waiting for pid {pid}: {}", std::io::Error::last_os_error());
    }
    // `Child` would otherwise not know it was reaped; dropping it neither kills nor waits.
    drop(running.child);
    // Cut the zeros the watcher did not overwrite.
    let mut out = running.out;
    let end = std::io::Seek::stream_position(&mut out).context("output position")?;
    out.set_len(end).context("truncating the output")?;
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(Stopped {
        user: tv(usage.ru_utime),
        system: tv(usage.ru_stime),
        max_rss_bytes: usage.ru_maxrss as u64 * 1024,
        output: running.output,
    })
}
