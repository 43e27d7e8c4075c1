//! The cgroup of an event's caller, as printed: its id, its path below the cgroup v2 root, and
//! the container and Kubernetes pod that path names (`crate::cgroup` resolves them).

use serde::Serialize;

/// The cgroup of an event's caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cgroup {
    /// The cgroup v2 id (inode number of its directory).
    pub id: u64,
    /// Path below the cgroup v2 root, e.g. `/system.slice/nginx.service`; `None` when it could
    /// not be resolved (the cgroup was removed before it was looked up).
    pub path: Option<String>,
    /// The container the path names, if any.
    pub container: Option<Container>,
    /// The Kubernetes pod uid the path names, if any.
    pub pod_uid: Option<String>,
    /// This object as JSON text, made once per cgroup: the JSON Lines encoder writes it as is
    /// into every event of that cgroup.
    #[serde(skip)]
    pub json: String,
}

impl Cgroup {
    pub fn new(
        id: u64,
        path: Option<String>,
        container: Option<Container>,
        pod_uid: Option<String>,
    ) -> Cgroup {
        let mut c = Cgroup {
            id,
            path,
            container,
            pod_uid,
            json: String::new(),
        };
        c.json = serde_json::to_string(&c).unwrap_or_default();
        c
    }

    /// Whether this cgroup is `root` (a path below the cgroup root) or below it.
    pub fn is_under(&self, root: &str) -> bool {
        let Some(path) = &self.path else {
            return false;
        };
        let root = root.trim_end_matches('/');
        root.is_empty()
            || path == root
            || path
                .strip_prefix(root)
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

/// A container, as its cgroup path names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Container {
    /// The runtime's container id (64 hex digits).
    pub id: String,
    /// `docker`, `containerd`, `cri-o`, `podman`; `None` when the path does not say.
    pub runtime: Option<&'static str>,
}
