//! A bind refused before any port is looked at: the rule of `bind()` that refuses it, in
//! words, the facts of the namespace it rests on, and what would work. The `"refusal"` object
//! of `observer why --json`, and of the `"conflict"` object of a failed `bind`/`listen` event
//! other than EADDRINUSE; filled by `crate::conflict::refusal` (one implementation of the rules
//! for both).

use serde::Serialize;
use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// The errno `bind()` returns, e.g. `"EADDRNOTAVAIL"`.
    pub errno: Cow<'static, str>,
    /// The rule, e.g. `address-not-local`, `address-not-ready`, `privileged-port`,
    /// `unknown-scope`, `mapped-on-v6only`, `link-local-needs-scope`; in events also
    /// `already-bound`, `address-length`, `family-mismatch`, `cgroup-bpf`, `refused-elsewhere`,
    /// `listen-not-stream`, `listen-state`, `errno` (what the errno means for the call), and
    /// [`NOT_EXPLAINED`].
    pub rule: &'static str,
    /// The rule as it applies here.
    pub text: String,
    /// What the namespace holds that the rule reads (addresses, sysctls, interfaces).
    pub facts: Vec<String>,
    /// Changes that would work.
    pub fixes: Vec<String>,
}

/// The rule of a refusal that could not be explained: its text says why.
pub const NOT_EXPLAINED: &str = "not-explained";
