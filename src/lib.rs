//! `disinto-claude-init`: move Claude Code's config from `~/.claude` into the disinto factory's
//! shared `CLAUDE_CONFIG_DIR`, as a planned, journaled, reversible, verified one-shot command.
//!
//! The pipeline, one module each: `settings` (who and where) -> `layout` (detect, no side
//! effects) -> `plan` (ordered steps, no side effects) -> `preflight` (refusals) -> `txn`
//! (journal, apply, rollback, resume, undo) over `step` (one file per step family: apply, undo,
//! its undo record) and `fsops` (verified copy, manifest, walks) -> `verify` -> `report` (human
//! or JSON). `docs/design.md` draws it; `docs/contract.md` is the contract it implements.

pub mod agents;
pub mod app;
pub(crate) mod atomic;
pub mod cli;
// pub for tests/env_readers.rs: its generator drives `edit` and `read_values` directly.
pub mod envfile;
pub mod error;
pub(crate) mod failpoint;
pub mod fsops;
pub(crate) mod journal;
pub(crate) mod layout;
pub(crate) mod live;
pub(crate) mod lock;
pub mod mounts;
pub(crate) mod pathser;
pub(crate) mod plan;
pub(crate) mod preflight;
// pub for tests/env_readers.rs (`apply_block`, `later_overrides` on generated rc files);
// `remove_block` has no caller in the crate yet.
pub mod profile;
pub mod report;
pub(crate) mod safefs;
pub(crate) mod settings;
pub(crate) mod step;
pub(crate) mod trust;
pub(crate) mod txn;
pub(crate) mod verify;
pub mod waiter;
