//! Linux errno numbers and their names, for the `result` column (`EADDRINUSE`, not `98`).

/// Names of Linux errnos 0..=133 (x86_64 and the other "generic" architectures), index = errno;
/// 0 is the success result.
const NAMES: [&str; 134] = [
    "OK",
    "EPERM",
    "ENOENT",
    "ESRCH",
    "EINTR",
    "EIO",
    "ENXIO",
    "E2BIG",
    "ENOEXEC",
    "EBADF",
    "ECHILD",
    "EAGAIN",
    "ENOMEM",
    "EACCES",
    "EFAULT",
    "ENOTBLK",
    "EBUSY",
    "EEXIST",
    "EXDEV",
    "ENODEV",
    "ENOTDIR",
    "EISDIR",
    "EINVAL",
    "ENFILE",
    "EMFILE",
    "ENOTTY",
    "ETXTBSY",
    "EFBIG",
    "ENOSPC",
    "ESPIPE",
    "EROFS",
    "EMLINK",
    "EPIPE",
    "EDOM",
    "ERANGE",
    "EDEADLK",
    "ENAMETOOLONG",
    "ENOLCK",
    "ENOSYS",
    "ENOTEMPTY",
    "ELOOP",
    "",
    "ENOMSG",
    "EIDRM",
    "ECHRNG",
    "EL2NSYNC",
    "EL3HLT",
    "EL3RST",
    "ELNRNG",
    "EUNATCH",
    "ENOCSI",
    "EL2HLT",
    "EBADE",
    "EBADR",
    "EXFULL",
    "ENOANO",
    "EBADRQC",
    "EBADSLT",
    "",
    "EBFONT",
    "ENOSTR",
    "ENODATA",
    "ETIME",
    "ENOSR",
    "ENONET",
    "ENOPKG",
    "EREMOTE",
    "ENOLINK",
    "EADV",
    "ESRMNT",
    "ECOMM",
    "EPROTO",
    "EMULTIHOP",
    "EDOTDOT",
    "EBADMSG",
    "EOVERFLOW",
    "ENOTUNIQ",
    "EBADFD",
    "EREMCHG",
    "ELIBACC",
    "ELIBBAD",
    "ELIBSCN",
    "ELIBMAX",
    "ELIBEXEC",
    "EILSEQ",
    "ERESTART",
    "ESTRPIPE",
    "EUSERS",
    "ENOTSOCK",
    "EDESTADDRREQ",
    "EMSGSIZE",
    "EPROTOTYPE",
    "ENOPROTOOPT",
    "EPROTONOSUPPORT",
    "ESOCKTNOSUPPORT",
    "EOPNOTSUPP",
    "EPFNOSUPPORT",
    "EAFNOSUPPORT",
    "EADDRINUSE",
    "EADDRNOTAVAIL",
    "ENETDOWN",
    "ENETUNREACH",
    "ENETRESET",
    "ECONNABORTED",
    "ECONNRESET",
    "ENOBUFS",
    "EISCONN",
    "ENOTCONN",
    "ESHUTDOWN",
    "ETOOMANYREFS",
    "ETIMEDOUT",
    "ECONNREFUSED",
    "EHOSTDOWN",
    "EHOSTUNREACH",
    "EALREADY",
    "EINPROGRESS",
    "ESTALE",
    "EUCLEAN",
    "ENOTNAM",
    "ENAVAIL",
    "EISNAM",
    "EREMOTEIO",
    "EDQUOT",
    "ENOMEDIUM",
    "EMEDIUMTYPE",
    "ECANCELED",
    "ENOKEY",
    "EKEYEXPIRED",
    "EKEYREVOKED",
    "EKEYREJECTED",
    "EOWNERDEAD",
    "ENOTRECOVERABLE",
    "ERFKILL",
    "EHWPOISON",
];

/// `"OK"` for 0, the errno's name for a known positive errno, `"E<n>"` otherwise.
#[inline]
pub fn name(errno: i32) -> std::borrow::Cow<'static, str> {
    let known = usize::try_from(errno).ok().and_then(|i| NAMES.get(i));
    match known.filter(|n| !n.is_empty()) {
        Some(name) => (*name).into(),
        None => format!("E{errno}").into(),
    }
}

/// The errno named `name` (`"EADDRINUSE"` gives 98).
pub fn from_name(name: &str) -> Option<i32> {
    if name.is_empty() {
        return None;
    }
    NAMES
        .iter()
        .position(|n| *n == name)
        .and_then(|i| i32::try_from(i).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_linux_numbers() {
        assert_eq!(name(0), "OK");
        assert_eq!(name(libc::EACCES), "EACCES");
        assert_eq!(name(libc::EINVAL), "EINVAL");
        assert_eq!(name(libc::EADDRINUSE), "EADDRINUSE");
        assert_eq!(name(libc::EADDRNOTAVAIL), "EADDRNOTAVAIL");
        assert_eq!(name(libc::EAFNOSUPPORT), "EAFNOSUPPORT");
        assert_eq!(name(libc::ENOTSOCK), "ENOTSOCK");
        assert_eq!(name(libc::EAGAIN), "EAGAIN");
        assert_eq!(name(libc::EOPNOTSUPP), "EOPNOTSUPP");
        assert_eq!(name(libc::EHWPOISON), "EHWPOISON");
        assert_eq!(name(41), "E41");
        assert_eq!(name(134), "E134");
        assert_eq!(name(-1), "E-1");
        assert_eq!(from_name("EADDRINUSE"), Some(98));
        assert_eq!(from_name("nope"), None);
    }
}
