//! The journal's wire form of the undo records: one flat object per entry, the same JSON since
//! the first version. Each step family reads and writes only its own fields, typed, through
//! [`Record`](super::Record).

use crate::pathser;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What undoing a step needs, recorded before the step changes anything: the journal's wire
/// form of every step family's own record ([`Record`](super::Record)), one flat object whose JSON
/// has not changed since the first version. Each step family reads and writes only its fields,
/// typed (phases are enums there). Each field is set once (a resumed step must not overwrite
/// what the first attempt saw).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wire {
    /// The undo data below has been recorded.
    #[serde(default)]
    pub recorded: bool,
    /// Directories this step created, outermost first.
    #[serde(
        default,
        with = "pathser::paths",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub created_dirs: Vec<PathBuf>,
    /// Mode/owner/mtime of a directory the step removed or replaced (an empty ~/.claude, an
    /// empty pre-existing config dir) or re-moded (the config dir).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir_meta: Option<Meta>,
    /// The target of a symlink the step replaced, and its owner.
    #[serde(
        default,
        with = "pathser::opt_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub prev_link: Option<PathBuf>,
    /// Whether the file existed before (for env/rc writes), with its bytes and metadata.
    #[serde(default)]
    pub existed: bool,
    #[serde(
        default,
        with = "pathser::opt_bytes",
        skip_serializing_if = "Option::is_none"
    )]
    pub prev_bytes: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_meta: Option<Meta>,
    /// blake3 of the bytes the step wrote: undo refuses to clobber a file edited since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_hash: Option<String>,
    /// Progress of a multi-phase move (`copying`, `copied`, `placed`), and of its undo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo_phase: Option<String>,
    /// mtime of the directory a file was moved into, put back after the move so the config
    /// dir's manifest stays exactly the old `~/.claude`'s (and again on undo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_mtime: Option<(i64, i64)>,
    /// A later run rewrote the same file: undoing that run puts back the bytes this one
    /// wrote (or an edit made in between, which the later run took over), so this entry's
    /// "changed since" check does not apply; its job is only to restore the original.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub superseded: bool,
    /// The link a link step was to make was already there, as wanted, when it began (made by
    /// `move-config`'s exchange, in the same instant as the move): the step made nothing, so its
    /// undo removes nothing, and `move-config`'s undo exchanges the names back with no instant
    /// without `~/.claude`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub found_in_place: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
}
