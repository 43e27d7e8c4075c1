//! tracefs: making sure it is mounted, and reading the record layout of the syscall
//! tracepoints from their `format` files instead of assuming it.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error("tracefs is not mounted and mounting it on {path} failed: {source}")]
    Mount {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot search {path}: {err} (tracefs is root's alone: run as uid 0, or grant \
         CAP_DAC_READ_SEARCH)"
    )]
    Denied { path: String, err: std::io::Error },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    Format { path: String, msg: String },
}

const MOUNT_POINT: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// Finds tracefs, mounting it on `/sys/kernel/tracing` when it is nowhere. Returns its path and
/// whether this call mounted it (so that the caller can say so).
pub fn ensure_mounted() -> Result<(PathBuf, bool), TracefsError> {
    for candidate in [MOUNT_POINT, DEBUGFS_TRACING] {
        match std::fs::metadata(Path::new(candidate).join("events")) {
            Ok(meta) if meta.is_dir() => return Ok((PathBuf::from(candidate), false)),
            // Mounted, but a user other than root may not look in (mode 0700): mounting again
            // would only fail with a misleading EBUSY or EPERM.
            Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(TracefsError::Denied {
                    path: candidate.into(),
                    err,
                });
            }
            _ => {}
        }
    }
    let target = c"/sys/kernel/tracing";
    let fstype = c"tracefs";
    let source = c"nodev";
    // SAFETY: all pointers are valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(TracefsError::Mount {
            path: MOUNT_POINT.into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok((PathBuf::from(MOUNT_POINT), true))
}

/// One field of a tracepoint record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub offset: u32,
    pub size: u32,
}

/// Reads `events/<category>/<name>/format` and returns the named field.
pub fn field(
    tracefs: &Path,
    category: &str,
    name: &str,
    field: &str,
) -> Result<Field, TracefsError> {
    let path = tracefs
        .join("events")
        .join(category)
        .join(name)
        .join("format");
    let text = std::fs::read_to_string(&path).map_err(|source| TracefsError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_field(&text, field).ok_or_else(|| TracefsError::Format {
        path: path.display().to_string(),
        msg: format!("no field `{field}`"),
    })
}

/// Finds `field:<type> <name>; offset:N; size:M;` in a tracepoint format description.
pub fn parse_field(format: &str, name: &str) -> Option<Field> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';').map(str::trim);
        let decl = parts.next()?.strip_prefix("field:")?;
        let field_name = decl.rsplit([' ', '*']).next()?;
        if field_name != name {
            return None;
        }
        let mut offset = None;
        let mut size = None;
        for part in parts {
            if let Some(v) = part.strip_prefix("offset:") {
                offset = v.parse().ok();
            } else if let Some(v) = part.strip_prefix("size:") {
                size = v.parse().ok();
            }
        }
        Some(Field {
            offset: offset?,
            size: size?,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENTER_BIND: &str = "name: sys_enter_bind
ID: 2238
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:int fd;\toffset:16;\tsize:8;\tsigned:0;
\tfield:struct sockaddr * umyaddr;\toffset:24;\tsize:8;\tsigned:0;
\tfield:int addrlen;\toffset:32;\tsize:8;\tsigned:0;
";

    #[test]
    fn parses_syscall_tracepoint_fields() {
        assert_eq!(
            parse_field(ENTER_BIND, "fd"),
            Some(Field {
                offset: 16,
                size: 8
            })
        );
        assert_eq!(
            parse_field(ENTER_BIND, "umyaddr"),
            Some(Field {
                offset: 24,
                size: 8
            })
        );
        assert_eq!(
            parse_field(ENTER_BIND, "addrlen"),
            Some(Field {
                offset: 32,
                size: 8
            })
        );
        assert_eq!(parse_field(ENTER_BIND, "ret"), None);
        assert_eq!(parse_field("field:int x;\toffset:zz;\tsize:4;", "x"), None);
    }
}
