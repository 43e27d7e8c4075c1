//! What a cgroup path says about containers: the container id and the runtime that made it,
//! and the Kubernetes pod uid, from the directory names each runtime and cgroup driver uses.
//!
//! The runtimes name their cgroups as follows (systemd driver / cgroupfs driver):
//! * docker: `docker-<id>.scope` / `/docker/<id>`
//! * containerd (CRI): `cri-containerd-<id>.scope` / `.../pod<uid>/<id>`
//! * cri-o: `crio-<id>.scope` (`crio-conmon-<id>.scope` is its monitor, not the container)
//! * podman: `libpod-<id>.scope` / `/libpod_parent/libpod-<id>` (plus a `container` child when
//!   the container has its own cgroup namespace)
//! * Kubernetes pods: `kubepods-<qos>-pod<uid with _>.slice` / `/kubepods/<qos>/pod<uid>`.
//!
//! A 64-hex-digit directory under a pod (cgroupfs driver) is a container whose runtime the path
//! does not tell: its `runtime` is `None`.

use crate::model::Container;

/// The container and pod uid a cgroup path shows, if any. The deepest container wins (podman's
/// nested `container` directory belongs to the scope above it).
pub fn parse(path: &str) -> (Option<Container>, Option<String>) {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let (mut container, mut pod) = (None, None);
    for (i, part) in parts.iter().enumerate() {
        if let Some(uid) = pod_uid(part) {
            pod = Some(uid);
            continue;
        }
        let bare = |runtime| {
            is_container_id(part).then(|| Container {
                id: part.to_string(),
                runtime,
            })
        };
        let found = runtime_scope(part).or_else(|| match i.checked_sub(1).map(|j| parts[j]) {
            Some("docker") => bare(Some("docker")),
            Some(parent) if pod_uid(parent).is_some() => bare(None),
            _ => None,
        });
        if found.is_some() {
            container = found;
        }
    }
    (container, pod)
}

/// `<prefix><id>.scope`, or `libpod-<id>` (podman's cgroupfs driver).
fn runtime_scope(part: &str) -> Option<Container> {
    const PREFIXES: [(&str, &str); 4] = [
        ("docker-", "docker"),
        ("cri-containerd-", "containerd"),
        ("crio-", "cri-o"),
        ("libpod-", "podman"),
    ];
    let name = part.strip_suffix(".scope").unwrap_or(part);
    PREFIXES.iter().find_map(|(prefix, runtime)| {
        let id = name.strip_prefix(prefix)?;
        is_container_id(id).then(|| Container {
            id: id.to_string(),
            runtime: Some(runtime),
        })
    })
}

/// `kubepods-besteffort-pod<uid>.slice` (systemd: `_` for `-`) or `pod<uid>` (cgroupfs).
fn pod_uid(part: &str) -> Option<String> {
    let name = part.strip_suffix(".slice").unwrap_or(part);
    let at = name.rfind("pod")?;
    let before = &name[..at];
    if !(before.is_empty() || before.starts_with("kubepods") && before.ends_with('-')) {
        return None;
    }
    let uid = name[at + 3..].replace('_', "-");
    is_uid(&uid).then_some(uid)
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A UUID: 36 characters, hex digits and four dashes in the 8-4-4-4-12 places.
fn is_uid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4a6e5c0d3f2b1a09876543210fedcba9876543210fedcba9876543210fedcba9";
    const UID: &str = "8f2d6c3e-1b7a-4e5f-9a0b-c1d2e3f4a5b6";

    fn c(runtime: Option<&'static str>) -> Option<Container> {
        Some(Container {
            id: ID.into(),
            runtime,
        })
    }

    #[test]
    fn docker_systemd_and_cgroupfs() {
        assert_eq!(
            parse(&format!("/system.slice/docker-{ID}.scope")),
            (c(Some("docker")), None)
        );
        assert_eq!(parse(&format!("/docker/{ID}")), (c(Some("docker")), None));
    }

    #[test]
    fn kubernetes_containerd_systemd() {
        let uid_ = UID.replace('-', "_");
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(parse(&path), (c(Some("containerd")), Some(UID.into())));
        // The pod's own slice (its pause process's siblings): a pod, no container.
        let pod = format!("/kubepods.slice/kubepods-pod{uid_}.slice");
        assert_eq!(parse(&pod), (None, Some(UID.into())));
    }

    #[test]
    fn kubernetes_cgroupfs_does_not_say_the_runtime() {
        let path = format!("/kubepods/besteffort/pod{UID}/{ID}");
        assert_eq!(parse(&path), (c(None), Some(UID.into())));
    }

    #[test]
    fn crio_and_its_monitor() {
        let uid_ = UID.replace('-', "_");
        let path = format!("/kubepods.slice/kubepods-pod{uid_}.slice/crio-{ID}.scope");
        assert_eq!(parse(&path), (c(Some("cri-o")), Some(UID.into())));
        let conmon = format!("/kubepods.slice/kubepods-pod{uid_}.slice/crio-conmon-{ID}.scope");
        assert_eq!(parse(&conmon), (None, Some(UID.into())));
    }

    #[test]
    fn podman_scope_nested_and_cgroupfs() {
        assert_eq!(
            parse(&format!("/machine.slice/libpod-{ID}.scope/container")),
            (c(Some("podman")), None)
        );
        assert_eq!(
            parse(&format!("/libpod_parent/libpod-{ID}")),
            (c(Some("podman")), None)
        );
    }

    #[test]
    fn host_services_and_odd_names_are_no_container() {
        for path in [
            "/",
            "/system.slice/nginx.service",
            "/user.slice/user-1000.slice/session-2.scope",
            "/system.slice/docker.service",
            "/docker/not-an-id",
            "/kubepods/podnot-a-uid/abc",
            "/system.slice/docker-abc.scope",
        ] {
            assert_eq!(parse(path), (None, None), "{path}");
        }
    }
}
