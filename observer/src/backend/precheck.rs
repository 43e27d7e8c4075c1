//! Cheap checks, before the expensive attempt, of whether a kernel-function backend can work
//! on this kernel at all. A full attempt parses the kernel's BTF twice more (aya's loader, then
//! the fexit attach), loads the whole object and self-tests it; on a kernel that refuses
//! trampolines or has no kprobe support that was most of `auto`'s start-up time and memory.
//!
//! Each check answers only "refused, because ..." or "cannot tell"; on "cannot tell" the full
//! attempt decides, so a check can never skip a backend that would have worked.

use crate::btf::Btf;
use std::path::Path;

/// `BPF_PROG_LOAD` (the `bpf(2)` command).
const BPF_PROG_LOAD: libc::c_long = 5;
/// `BPF_PROG_TYPE_TRACING`.
const BPF_PROG_TYPE_TRACING: u32 = 26;
/// `BPF_TRACE_FEXIT`.
const BPF_TRACE_FEXIT: u32 = 25;
/// The kernel's own `ENOTSUPP` (not a libc errno): an architecture without BPF trampolines.
const ENOTSUPP: i32 = 524;

/// The `BPF_PROG_LOAD` part of `union bpf_attr` (UAPI `linux/bpf.h`), up to
/// `attach_btf_obj_fd`: the fields a tracing program needs.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
    attach_btf_obj_fd: u32,
    _pad: u32,
}

/// Why fexit on `function` cannot load here, if the kernel says so: loads a two-instruction
/// fexit program (`r0 = 0; exit`) attached to it and reads the refusal. `None` when it loads
/// or the answer is not a refusal (the full attempt then decides).
pub fn fexit_refused(btf: &Btf, function: &str) -> Option<String> {
    let id = btf.func_id(function)?;
    // mov64 r0, 0; exit
    let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
    let license = c"GPL";
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_TRACING,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        expected_attach_type: BPF_TRACE_FEXIT,
        attach_btf_id: id,
        ..ProgLoadAttr::default()
    };
    // SAFETY: `attr` is a valid BPF_PROG_LOAD attribute of the size given; the pointers in it
    // (instructions, license) outlive the call. The kernel only reads it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoadAttr,
            size_of::<ProgLoadAttr>(),
        )
    };
    if fd >= 0 {
        // SAFETY: the fd was just returned to us and is closed once.
        unsafe { libc::close(fd as i32) };
        return None;
    }
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    // Only a refusal skips the backend; anything else (an old kernel's EINVAL for a field it
    // does not know, ...) is left to the full attempt.
    matches!(errno, libc::EPERM | libc::EACCES | ENOTSUPP).then(|| {
        format!(
            "BPF_PROG_LOAD refused: {} (fexit_{function})",
            crate::errno::name(errno)
        )
    })
}

/// Why kprobes cannot attach here: aya attaches them through the kprobe perf PMU, which a
/// kernel without `CONFIG_KPROBES` does not have.
pub fn kprobe_refused(function: &str) -> Option<String> {
    let pmu = Path::new("/sys/bus/event_source/devices/kprobe/type");
    (!pmu.exists()).then(|| {
        format!(
            "attaching kprobe:{function}: no kprobe support in this kernel ({} is missing)",
            pmu.display()
        )
    })
}
