//! The iterator programs of the kernel object (`observer-ebpf/src/iter.rs`), loaded once per
//! process on first need and shared by their readers: the socket options
//! ([`super::sockflags`]) and the owners of sockets ([`super::owners`]). Each read attaches
//! a program and creates a fresh iterator: `iter/tcp` and `iter/udp` walk the network
//! namespace of the thread that creates it, `iter/task_file` the processes of this process's
//! pid namespace.

use crate::kernel::{self, PROGRAMS};
use aya::programs::Iter;
use aya::{Ebpf, EbpfLoader};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

/// An iterator program: (iterator name, program name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    Tcp,
    Udp,
    TaskFile,
    Task,
}

impl Program {
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Program::Tcp => ("tcp", "tcp_sock_flags"),
            Program::Udp => ("udp", "udp_sock_flags"),
            Program::TaskFile => ("task_file", "task_socket_owners"),
            Program::Task => ("task", "tasks_in_netns"),
        }
    }
}

/// The loaded object (its ring buffer and the other programs' maps are not used here).
pub struct Loaded {
    pub ebpf: Ebpf,
    /// Why `iter/task_file` or `iter/task` did not load, if one did not (the socket
    /// iterators serve alone; owners are then found through `/proc`).
    pub task_file: Result<(), String>,
}

static LOADED: Mutex<Option<Loaded>> = Mutex::new(None);

/// The object, loaded on the first call. The lock is held while the caller uses it, so one
/// walk's query map is never overwritten by another's.
pub fn object() -> Result<MutexGuard<'static, Option<Loaded>>, String> {
    let mut loaded = LOADED.lock().unwrap_or_else(|p| p.into_inner());
    if loaded.is_none() {
        *loaded = Some(load()?);
    }
    Ok(loaded)
}

/// Whether [`load`] runs its BTF parses at once (see [`parallel_load`]).
static PARALLEL: AtomicBool = AtomicBool::new(false);

/// Makes the load run its three BTF parses at once: faster, with about 15 MiB more at the
/// peak. For the one-shot `observer why`, whose time is the load's; `watch` loads in the
/// background and keeps its peak low.
pub fn parallel_load() {
    PARALLEL.store(true, Ordering::Relaxed);
}

/// Three parses of the kernel's BTF stand between a process and its first iterator: ours
/// (the field locations), the one `EbpfLoader::new()` makes whatever it is told afterwards,
/// and the one `Iter::load` needs to find its attach point. They do not depend on each other,
/// so they may run at once (one after the other they are about two thirds of a one-shot
/// `observer why`'s time).
fn load() -> Result<Loaded, String> {
    let config = || {
        kernel::resolved()
            .map(|r| r.config)
            .map_err(|e| e.to_string())
    };
    if !PARALLEL.load(Ordering::Relaxed) {
        // One parse alive at a time: the loader's is dropped with it, before the next.
        let mut ebpf = object_with(EbpfLoader::new(), &config()?)?;
        let kernel_btf = aya::Btf::from_sys_fs().map_err(|e| e.to_string())?;
        return programs(&mut ebpf, &kernel_btf).map(|task_file| Loaded { ebpf, task_file });
    }
    std::thread::scope(|scope| {
        let attach_btf = scope.spawn(aya::Btf::from_sys_fs);
        let loader = scope.spawn(EbpfLoader::new);
        let config = config();
        let loader = loader
            .join()
            .map_err(|_| "the BTF parse for the loader panicked")?;
        let kernel_btf = attach_btf
            .join()
            .map_err(|_| "the BTF parse for the iterators panicked")?;
        let mut ebpf = object_with(loader, &config?)?;
        let kernel_btf = kernel_btf.map_err(|e| e.to_string())?;
        programs(&mut ebpf, &kernel_btf).map(|task_file| Loaded { ebpf, task_file })
    })
}

fn object_with<'a>(
    mut loader: EbpfLoader<'a>,
    config: &'a observer_common::Config,
) -> Result<Ebpf, String> {
    let page = u32::try_from(crate::page_size()).unwrap_or(4096);
    loader
        .override_global("CONFIG", config, true)
        // The smallest ring buffer: this object only serves the iterators.
        .map_max_entries("EVENTS", page)
        .load(PROGRAMS)
        .map_err(|e| format!("loading the programs: {e}"))
}

/// Loads the iterator programs; `Err` only when the socket iterators do not load, `Ok` with
/// why the task iterators did not, if they did not.
fn programs(ebpf: &mut Ebpf, kernel_btf: &aya::Btf) -> Result<Result<(), String>, String> {
    let mut load_one = |p: Program| {
        let (iter, _) = p.names();
        program(ebpf, p)?
            .load(iter, kernel_btf)
            .map_err(|e| format!("loading iter/{iter}: {e}"))
    };
    load_one(Program::Tcp)?;
    load_one(Program::Udp)?;
    Ok(load_one(Program::TaskFile).and_then(|()| load_one(Program::Task)))
}

fn program(ebpf: &mut Ebpf, p: Program) -> Result<&mut Iter, String> {
    let (_, name) = p.names();
    ebpf.program_mut(name)
        .ok_or_else(|| format!("program {name} missing from the object"))?
        .try_into()
        .map_err(|e| format!("program {name}: {e}"))
}

/// Runs `p` once over a fresh iterator and returns what it wrote.
pub fn run(ebpf: &mut Ebpf, p: Program) -> Result<Vec<u8>, String> {
    read(open(ebpf, p)?)
}

/// A fresh iterator of `p`, not read yet. It keeps its program and what it walks (the
/// network namespace of the thread that made it, for the socket iterators), so it may be read
/// after the object's lock is let go, on another thread — but a program that reads a query
/// map (`iter/task_file`) reads it at that time.
pub fn open(ebpf: &mut Ebpf, p: Program) -> Result<Opened, String> {
    let iter = p.names().0;
    let prog = program(ebpf, p)?;
    let id = prog
        .attach()
        .map_err(|e| format!("attaching iter/{iter}: {e}"))?;
    let link = prog.take_link(id).map_err(|e| e.to_string())?;
    let file = link
        .into_file()
        .map_err(|e| format!("creating the iterator: {e}"))?;
    Ok(Opened { iter, file })
}

/// An iterator made by [`open`].
pub struct Opened {
    iter: &'static str,
    file: std::fs::File,
}

/// Reads an iterator made by [`open`] to its end.
pub fn read(mut opened: Opened) -> Result<Vec<u8>, String> {
    read_all(&mut opened.file).map_err(|e| format!("reading iter/{}: {e}", opened.iter))
}

/// Runs `p`, a task iterator, over the threads of process `pid` only (`bpf_iter_link_info.task
/// .pid`, 6.1+): aya 0.14's `Iter::attach` passes no link info, so the link is made here.
pub fn run_for_pid(ebpf: &mut Ebpf, p: Program, pid: u32) -> Result<Vec<u8>, String> {
    use std::os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd};
    let iter = p.names().0;
    let prog = program(ebpf, p)?;
    let prog_fd = prog.fd().map_err(|e| e.to_string())?.as_fd().as_raw_fd();
    // `union bpf_iter_link_info`: `task { u32 tid; u32 pid; u32 pid_fd; }`, in a union whose
    // largest member (`cgroup`) is 16 bytes.
    let mut info = [0u32; 4];
    info[1] = pid;
    // `union bpf_attr`'s `link_create`: prog_fd, target_fd, attach_type, flags, then
    // `iter_info` (a pointer) and `iter_info_len`.
    let mut attr = [0u64; 16];
    attr[0] = u64::from(prog_fd as u32);
    attr[1] = u64::from(BPF_TRACE_ITER);
    attr[2] = info.as_ptr() as u64;
    attr[3] = std::mem::size_of_val(&info) as u64;
    let link = crate::kernel::bpf(BPF_LINK_CREATE, &mut attr)
        .map_err(|e| format!("attaching iter/{iter} to pid {pid}: {e}"))?;
    // SAFETY: a new descriptor owned only here.
    let link = unsafe { OwnedFd::from_raw_fd(link as i32) };
    let mut attr = [0u64; 16];
    attr[0] = u64::from(link.as_raw_fd() as u32);
    let fd = crate::kernel::bpf(BPF_ITER_CREATE, &mut attr)
        .map_err(|e| format!("creating the iterator: {e}"))?;
    // SAFETY: a new descriptor owned only here.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    read_all(&mut file).map_err(|e| format!("reading iter/{iter}: {e}"))
}

/// `BPF_LINK_CREATE`, `BPF_ITER_CREATE` (`enum bpf_cmd`) and `BPF_TRACE_ITER`
/// (`enum bpf_attach_type`), UAPI `linux/bpf.h`.
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_ITER_CREATE: libc::c_long = 33;
const BPF_TRACE_ITER: u32 = 28;

/// Reads an iterator to its end. A read that visits a million objects without writing
/// anything fails with EAGAIN (`MAX_ITER_OBJECTS`, `kernel/bpf/bpf_iter.c` `bpf_seq_read`),
/// keeping its place: `iter/task_file` on a host with more than a million descriptors does,
/// and the next read goes on from there.
fn read_all(file: &mut impl std::io::Read) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(raw),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails with EAGAIN every other read, as `bpf_seq_read` does past a million silent
    /// objects.
    struct Again {
        left: Vec<u8>,
        again: bool,
    }

    impl std::io::Read for Again {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.again = !self.again;
            if self.again {
                return Err(std::io::Error::from_raw_os_error(libc::EAGAIN));
            }
            let n = self.left.len().min(buf.len()).min(3);
            buf[..n].copy_from_slice(&self.left[..n]);
            self.left.drain(..n);
            Ok(n)
        }
    }

    #[test]
    fn eagain_means_read_again() {
        let mut r = Again {
            left: (0..10).collect(),
            again: false,
        };
        assert_eq!(read_all(&mut r).unwrap(), (0..10).collect::<Vec<u8>>());
    }
}
