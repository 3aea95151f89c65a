//! `disinto-claude-init`: move Claude Code's config from `~/.claude` into the disinto factory's
//! shared `CLAUDE_CONFIG_DIR`, as a planned, journaled, reversible, verified one-shot command.
//!
//! The pipeline, one module each: `settings` (who and where) -> `layout` (detect, no side
//! effects) -> `plan` (ordered steps, no side effects) -> `preflight` (refusals) -> `txn`
//! (journal, apply, rollback, resume, undo) over `exec` (each step's apply and undo) and
//! `fsops` (rename, verified copy, manifest) -> `verify` -> `report` (human or JSON).

pub mod app;
pub mod atomic;
pub mod cli;
pub mod envfile;
pub mod error;
pub mod failpoint;
pub mod fsops;
pub mod journal;
pub mod layout;
pub mod lock;
pub mod pathser;
pub mod plan;
pub mod preflight;
pub mod profile;
pub mod report;
pub mod settings;
pub mod step;
pub mod txn;
pub mod verify;
