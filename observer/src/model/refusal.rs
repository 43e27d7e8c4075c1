//! A bind refused before any port is looked at: the rule of `bind()` that refuses it, in
//! words, the facts of the namespace it rests on, and what would work. The `"refusal"` object
//! of `observer why --json`; filled by `crate::conflict::refusal`.

use serde::Serialize;
use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// The errno `bind()` returns, e.g. `"EADDRNOTAVAIL"`.
    pub errno: Cow<'static, str>,
    /// The rule, e.g. `address-not-local`, `address-not-ready`, `privileged-port`,
    /// `unknown-scope`, `mapped-on-v6only`, `link-local-needs-scope`.
    pub rule: &'static str,
    /// The rule as it applies here.
    pub text: String,
    /// What the namespace holds that the rule reads (addresses, sysctls, interfaces).
    pub facts: Vec<String>,
    /// Changes that would work.
    pub fixes: Vec<String>,
}
