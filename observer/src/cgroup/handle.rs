//! A cgroup id turned into its path through the kernel, whoever is (or was) in the cgroup.
//!
//! A cgroup v2 id (`bpf_get_current_cgroup_id`) is the id of the cgroup directory's kernfs
//! node, which is also the file handle kernfs encodes for it: `kernfs_encode_fh` writes the
//! 64-bit `kn->id` as two 32-bit words and returns `FILEID_KERNFS`, and `kernfs_fh_to_dentry`
//! takes that type, looks the id up in the hierarchy's id table and fails with `ESTALE` when
//! the node is gone (removed cgroups are deactivated at once). On a 64-bit `ino_t` the id is
//! also the directory's inode number. So one lookup is:
//!
//! 1. `open_by_handle_at(<cgroup2 mount>, {8, FILEID_KERNFS, id}, O_PATH | O_DIRECTORY)`,
//!    which needs `CAP_DAC_READ_SEARCH` (`may_decode_fh`; without it the kernel answers
//!    `EPERM`);
//! 2. `readlink("/proc/self/fd/N")`: the directory's path as this mount namespace sees it,
//!    e.g. `/sys/fs/cgroup/system.slice/x.service`, at most `PATH_MAX` bytes;
//! 3. `close`, and a `stat` of that path, which must still be this directory (same inode and
//!    device): it is not when the cgroup was removed in between (the link then ends in
//!    ` (deleted)`) or when the directory lies outside what the mount shows (a cgroup
//!    namespace's own mount: the link is then not below the mount point at all).
//!
//! Four system calls, none of whose cost depends on how many cgroups the host has (only on the
//! depth of the path). The mount point is stripped, giving the path below the cgroup root
//! (`/system.slice/x.service`, `/` for the root), as `/proc/PID/cgroup` writes it. The name
//! is whatever another process chose for a directory: it is kept as a (lossy) `String`, and
//! escaped where it reaches a terminal (`termsafe`).

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

/// `FILEID_KERNFS` (`include/linux/exportfs.h`): the handle type kernfs encodes and decodes.
const FILEID_KERNFS: i32 = 0xfe;

/// `struct file_handle` with the 8 bytes of a kernfs handle.
#[repr(C)]
struct KernfsHandle {
    handle_bytes: u32,
    handle_type: i32,
    /// `kn->id`, native endian (the kernel stores it as a `u64`).
    id: u64,
}

/// What a lookup found.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// The path below the cgroup root.
    Path(String),
    /// No cgroup with this id exists (any more), or its path cannot be told (longer than
    /// `PATH_MAX`, outside this mount): it will not resolve later either.
    Gone,
}

/// The cgroup v2 hierarchy, opened where it is mounted.
pub struct Mount {
    /// The mount point, opened (`open_by_handle_at` refuses an `O_PATH` descriptor here).
    fd: OwnedFd,
    /// The mount point as readlink writes paths under it, without a trailing `/` (empty for a
    /// mount on `/`).
    prefix: Vec<u8>,
    /// Device of the hierarchy: a directory with the same inode elsewhere is not the cgroup.
    dev: u64,
    /// Inode (= cgroup id) of the mount's own directory.
    root_ino: u64,
}

impl Mount {
    /// Opens the hierarchy mounted at `point`.
    pub fn open(point: &Path) -> io::Result<Mount> {
        let dir = std::fs::File::open(point)?;
        let meta = dir.metadata()?;
        let mut prefix = point.as_os_str().as_bytes().to_vec();
        while prefix.last() == Some(&b'/') {
            prefix.pop();
        }
        Ok(Mount {
            fd: dir.into(),
            prefix,
            dev: meta.dev(),
            root_ino: meta.ino(),
        })
    }

    /// The path of cgroup `id`. An error is the kernel refusing lookups by handle (see
    /// [`refused`]) or a passing failure (`EMFILE`, `ENOMEM`). A file system without handle
    /// support at all answers `ESTALE` to every id, which reads as [`Found::Gone`]: the
    /// caller checks the mount's own directory first ([`Mount::works`]).
    pub fn resolve(&self, id: u64) -> io::Result<Found> {
        let dir = match self.open_dir(id) {
            Ok(dir) => dir,
            Err(err) if is_gone(&err) => return Ok(Found::Gone),
            Err(err) => return Err(err),
        };
        let mut buf = [0u8; libc::PATH_MAX as usize];
        let link = format!("/proc/self/fd/{}\0", dir.as_raw_fd());
        // SAFETY: `link` is NUL-terminated, `buf` is writable for its whole length, and the
        // kernel writes at most that many bytes.
        let n = unsafe { libc::readlink(link.as_ptr().cast(), buf.as_mut_ptr().cast(), buf.len()) };
        let err = io::Error::last_os_error();
        drop(dir);
        let Ok(n) = usize::try_from(n) else {
            return match err.raw_os_error() {
                Some(libc::ENAMETOOLONG) => Ok(Found::Gone),
                _ => Err(err),
            };
        };
        if n >= buf.len() {
            // Possibly cut short: no path rather than a wrong one.
            return Ok(Found::Gone);
        }
        let target = &buf[..n];
        let Some(rel) = self.below(target) else {
            return Ok(Found::Gone);
        };
        // Still this directory under this name (not removed, renamed or out of view)?
        match std::fs::metadata(OsStr::from_bytes(target)) {
            Ok(meta) if meta.ino() == id && meta.dev() == self.dev => {}
            _ => return Ok(Found::Gone),
        }
        Ok(Found::Path(if rel.is_empty() {
            "/".into()
        } else {
            String::from_utf8_lossy(rel).into_owned()
        }))
    }

    /// Whether lookups work here: the mount's own directory resolves to `/`.
    pub fn works(&self) -> io::Result<bool> {
        Ok(self.resolve(self.root_ino)? == Found::Path("/".into()))
    }

    fn open_dir(&self, id: u64) -> io::Result<OwnedFd> {
        let mut handle = KernfsHandle {
            handle_bytes: 8,
            handle_type: FILEID_KERNFS,
            id,
        };
        // SAFETY: `handle` is a valid `struct file_handle` with `handle_bytes` bytes of handle
        // after its header, alive for the call; the mount descriptor is open.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_by_handle_at,
                self.fd.as_raw_fd(),
                &mut handle as *mut KernfsHandle,
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // The kernel returns an `int` descriptor.
        let fd = i32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
        // SAFETY: the kernel just opened `fd` for this process; nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// `target` below the mount point (`/a/b`, or empty for the mount point itself).
    fn below<'a>(&self, target: &'a [u8]) -> Option<&'a [u8]> {
        let rest = target.strip_prefix(self.prefix.as_slice())?;
        (rest.is_empty() || rest.starts_with(b"/")).then_some(rest)
    }
}

/// The cgroup is gone: `ESTALE` (no kernfs node with this id, or a deactivated one) or
/// `ENOENT`.
fn is_gone(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ESTALE | libc::ENOENT))
}

/// The kernel will not do lookups by handle for this process: no `CAP_DAC_READ_SEARCH`
/// (`EPERM`), or the file system cannot decode them (`EOPNOTSUPP`, `EINVAL`).
pub fn refused(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EPERM | libc::EACCES | libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS)
    )
}
