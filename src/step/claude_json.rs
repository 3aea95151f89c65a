//! `move-claude-json`: `~/.claude.json` moves into the config dir, by rename or, across
//! filesystems, by a verified copy (`copying`, `copied`) and then the removal of the source. The
//! config dir's mtime is put back after the move, so its manifest stays the old `~/.claude`'s.

use super::{
    anchor, copy_options, dir_meta, exists, io, is_real_dir, rename, staging, sync_dir,
    through_parent, unlink, Ctx, Method, Record, Res, Save, StepError, StepKind, Wire, RESTORE,
};
use crate::fsops;
use crate::pathser::{self, show};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// This family's undo record.
type R = ClaudeJsonRecord;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveClaudeJson {
    #[serde(with = "pathser::path")]
    pub from: PathBuf,
    #[serde(with = "pathser::path")]
    pub to: PathBuf,
    pub method: Method,
}

/// How far a cross-device copy of the file got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Copying: a copy found at the target is partial and is redone.
    Copying,
    /// The copy is complete and verified; the source may go.
    Copied,
}

/// What undoing `move-claude-json` needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaudeJsonRecord {
    pub recorded: bool,
    pub phase: Option<Phase>,
    /// mtime of the directory the file was moved into, put back after the move (and on undo).
    pub parent_mtime: Option<(i64, i64)>,
}

impl Record for ClaudeJsonRecord {
    fn from_wire(w: &Wire) -> Result<Self, StepError> {
        let phase = match w.phase.as_deref() {
            None => None,
            Some("copying") => Some(Phase::Copying),
            Some("copied") => Some(Phase::Copied),
            Some(other) => {
                return Err(StepError::new(format!(
                    "the journal records an unknown phase '{other}' of move-claude-json"
                )))
            }
        };
        Ok(ClaudeJsonRecord {
            recorded: w.recorded,
            phase,
            parent_mtime: w.parent_mtime,
        })
    }
    fn to_wire(&self) -> Wire {
        Wire {
            recorded: self.recorded,
            phase: self.phase.map(|p| {
                match p {
                    Phase::Copying => "copying",
                    Phase::Copied => "copied",
                }
                .to_string()
            }),
            parent_mtime: self.parent_mtime,
            ..Wire::default()
        }
    }
}

impl MoveClaudeJson {
    /// `to` as the config dir and the name in it.
    fn to_parts(&self) -> Result<(&Path, &std::ffi::OsStr), StepError> {
        match (self.to.parent(), self.to.file_name()) {
            (Some(dir), Some(name)) => Ok((dir, name)),
            _ => Err(StepError::new(format!(
                "'{}' has no parent",
                show(&self.to)
            ))),
        }
    }
}

impl StepKind for MoveClaudeJson {
    type Record = R;

    fn summary(&self) -> String {
        format!(
            "move {} -> {} by {}",
            show(&self.from),
            show(&self.to),
            match self.method {
                Method::Rename => "rename",
                Method::VerifiedCopy => "verified copy",
            }
        )
    }

    fn apply(&self, u: &mut R, ctx: &Ctx, save: &mut Save<R>) -> Res {
        let from = self.from.as_path();
        // Everything inside the config dir through the opened directory (issue 10 finding 9):
        // `to` below names it by its descriptor, whatever is put in place of its name.
        let (to_dir, to_name) = self.to_parts()?;
        let (cdir, anchored) = anchor(to_dir)?;
        let to_buf = anchored.join(to_name);
        let to = to_buf.as_path();
        let from_is_file = std::fs::symlink_metadata(from)
            .map(|m| m.is_file())
            .unwrap_or(false);
        if !u.recorded {
            if exists(to) {
                return Err(StepError::new(format!(
                    "'{}' appeared since planning; it will not be overwritten",
                    show(&self.to)
                )));
            }
            u.recorded = true;
            u.phase = Some(Phase::Copying);
            u.parent_mtime = Some(dir_meta(&cdir)?.mtime);
            save(u)?;
        }
        if !from_is_file && !exists(to) {
            return Err(StepError::new(format!("'{}' has disappeared", show(from))));
        }
        // Moved before a crash (`from` gone, `to` there): the config dir's mtime and the syncs
        // below may be all that is left to do.
        match self.method {
            _ if !from_is_file => {}
            Method::Rename => {
                rename(from, to)?;
            }
            Method::VerifiedCopy => {
                if u.phase != Some(Phase::Copied) {
                    if exists(to) {
                        unlink(to, "cannot remove the partial copy")?;
                    }
                    let (_d, source) = through_parent(from)?;
                    fsops::copy_file_verified(&source, to, &copy_options(ctx))?;
                    u.phase = Some(Phase::Copied);
                    save(u)?;
                }
                unlink(from, "cannot remove")?;
            }
        }
        crate::failpoint::failpoint("restore-mtime")?;
        if let Some(t) = u.parent_mtime {
            cdir.set_mtime(t)
                .map_err(|e| io("cannot set the mtime of", to_dir, e))?;
        }
        cdir.sync().map_err(|e| io("cannot sync", to_dir, e))?;
        sync_dir(ctx.home)
    }

    fn undo(&self, u: &mut R, ctx: &Ctx, _: &mut Save<R>) -> Res {
        let from = self.from.as_path();
        // Inside the config dir only through the opened directory (issue 10 finding 9); a
        // config dir that is gone (or a link now) holds nothing of ours to take back.
        let (to_dir, to_name) = self.to_parts()?;
        let anchored = if is_real_dir(to_dir) {
            Some(anchor(to_dir)?)
        } else {
            None
        };
        let to_buf = anchored
            .as_ref()
            .map(|(_, p)| p.join(to_name))
            .unwrap_or_default(); // "": exists nowhere
        let to = to_buf.as_path();
        let from_is_file = std::fs::symlink_metadata(from)
            .map(|m| m.is_file())
            .unwrap_or(false);
        if from_is_file {
            // The source is still there (the move had not finished): drop any copy.
            if exists(to) && self.method == Method::VerifiedCopy {
                unlink(to, "cannot remove")?;
            }
        } else if exists(to) {
            if exists(from) {
                return Err(StepError::new(format!(
                    "'{}' is in the way of restoring it",
                    show(from)
                )));
            }
            match self.method {
                Method::Rename => rename(to, from)?,
                Method::VerifiedCopy => {
                    let tmp = staging(from, RESTORE);
                    unlink(&tmp, "cannot remove")?;
                    let (_d, staged) = through_parent(&tmp)?;
                    fsops::copy_file_verified(to, &staged, &copy_options(ctx))?;
                    rename(&tmp, from)?;
                    unlink(to, "cannot remove")?;
                }
            }
        }
        if let (Some((d, _)), Some(t)) = (&anchored, u.parent_mtime) {
            d.set_mtime(t)
                .map_err(|e| io("cannot set the mtime of", to_dir, e))?;
            d.sync().map_err(|e| io("cannot sync", to_dir, e))?;
        }
        sync_dir(ctx.home)
    }

    fn touched_dir(&self) -> Option<PathBuf> {
        self.to.parent().map(Path::to_path_buf)
    }
}
