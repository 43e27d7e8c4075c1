//! The output model: every record the observer writes, with its serde shape and its
//! documentation, in one place. The capture side ([`crate::decode`]), the explanations
//! ([`crate::conflict`]) and the sinks all write into these types; this layer depends on none
//! of them (only on the socket-option table, [`crate::sockopt`]).
//!
//! JSON Lines records, each with a `"type"`: [`StartRecord`] (`"start"`), [`BindEvent`]
//! (`"bind"`, with a [`Conflict`] for an explained failure), [`ExplanationRecord`]
//! (`"explanation"`: a conflict that came after its event), [`LostRecord`] (`"lost"`),
//! [`Summary`] (`"summary"`); `observer why --json` writes a [`WhyRecord`] (`"why"`).
//! `SCHEMA.md` at the crate root documents every field; a test fails when a field is added
//! without a line there.

mod cgroup;
mod conflict;
mod connect;
mod event;
mod records;
mod refusal;
#[cfg(test)]
mod schema_tests;

pub use cgroup::{Cgroup, Container};
pub use conflict::{
    Conflict, Ephemeral, Holder, Named, Overlap, Owner, Partner, Proto, Rule, Sharing, WhyRecord,
};
pub use connect::{ConnectHolder, ConnectPorts};
pub use event::{BindEvent, Endpoint, Flags, Op, Remote, Requested, Unreadable};
pub use records::{ExplanationRecord, LostRecord, Repeat, Skipped, StartRecord, Summary};
pub use refusal::{NOT_EXPLAINED, Refusal};
