//! `move-config`: `~/.claude` becomes the config dir, by one rename on the same filesystem or,
//! across filesystems, in phases: a verified copy into a staging name (`copying`, `copied`), one
//! rename into place (`placed`), then the removal of the source. Undo of a placed copy copies
//! back the same way (`copying-back`, `restored`). An empty config dir that was there before is
//! replaced by the move; undo recreates it with its mode, owner and mtime.

use super::{
    at, copy_to_staging, exists, io, is_real_dir, meta_of, mkdir, remove_tree, rename,
    restore_meta, staging, sync_dir, sync_parent, unlink, Ctx, Meta, Method, Record, Res, Save,
    StepError, StepKind, Wire, INCOMING, RESTORE,
};
use crate::failpoint::failpoint;
use crate::fsops::nearest_existing;
use crate::pathser::{self, show};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// This family's undo record.
type R = MoveConfigRecord;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveConfig {
    #[serde(with = "pathser::path")]
    pub from: PathBuf,
    #[serde(with = "pathser::path")]
    pub to: PathBuf,
    pub method: Method,
    pub files: u64,
    pub bytes: u64,
}

/// How far a cross-device move got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The copy into the staging name is under way: never trusted, redone from scratch.
    Copying,
    /// The staged copy is complete and verified.
    Copied,
    /// The copy is in place; the source may go.
    Placed,
}

/// How far the undo of a placed copy got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UndoPhase {
    /// Copying the config dir back into `~/.claude`'s staging name.
    CopyingBack,
    /// `~/.claude` is back; the config dir may go.
    Restored,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Copying => "copying",
            Phase::Copied => "copied",
            Phase::Placed => "placed",
        }
    }
}

impl UndoPhase {
    fn as_str(self) -> &'static str {
        match self {
            UndoPhase::CopyingBack => "copying-back",
            UndoPhase::Restored => "restored",
        }
    }
}

fn parse<T: Copy>(
    s: Option<&str>,
    all: &[T],
    name: fn(T) -> &'static str,
) -> Result<Option<T>, StepError> {
    let Some(s) = s else { return Ok(None) };
    all.iter()
        .copied()
        .find(|p| name(*p) == s)
        .map(Some)
        .ok_or_else(|| {
            StepError::new(format!(
                "the journal records an unknown phase '{s}' of move-config"
            ))
        })
}

/// What undoing `move-config` needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MoveConfigRecord {
    pub recorded: bool,
    /// The empty config dir the move replaced.
    pub dir_meta: Option<Meta>,
    pub phase: Option<Phase>,
    pub undo_phase: Option<UndoPhase>,
}

impl Record for MoveConfigRecord {
    fn from_wire(w: &Wire) -> Result<Self, StepError> {
        Ok(MoveConfigRecord {
            recorded: w.recorded,
            dir_meta: w.dir_meta,
            phase: parse(
                w.phase.as_deref(),
                &[Phase::Copying, Phase::Copied, Phase::Placed],
                Phase::as_str,
            )?,
            undo_phase: parse(
                w.undo_phase.as_deref(),
                &[UndoPhase::CopyingBack, UndoPhase::Restored],
                UndoPhase::as_str,
            )?,
        })
    }
    fn to_wire(&self) -> Wire {
        Wire {
            recorded: self.recorded,
            dir_meta: self.dir_meta,
            phase: self.phase.map(|p| p.as_str().to_string()),
            undo_phase: self.undo_phase.map(|p| p.as_str().to_string()),
            ..Wire::default()
        }
    }
}

impl MoveConfigRecord {
    /// Whether undoing it copies the config dir back (and so needs the space for it).
    pub fn undo_copies_back(&self) -> bool {
        self.phase == Some(Phase::Placed) && self.undo_phase != Some(UndoPhase::Restored)
    }
}

impl MoveConfig {
    /// The typed record of a journal entry of this step.
    pub fn record(w: &Wire) -> Result<MoveConfigRecord, StepError> {
        MoveConfigRecord::from_wire(w)
    }
}

impl StepKind for MoveConfig {
    type Record = R;

    fn summary(&self) -> String {
        format!(
            "move {} -> {} by {}: {} files, {}",
            show(&self.from),
            show(&self.to),
            match self.method {
                Method::Rename => "rename (same filesystem, nothing copied)",
                Method::VerifiedCopy =>
                    "verified copy, then removal of the source (different filesystems)",
            },
            self.files,
            super::human_bytes(self.bytes)
        )
    }

    fn apply(&self, u: &mut R, ctx: &Ctx, save: &mut Save<R>) -> Res {
        let (from, to) = (self.from.as_path(), self.to.as_path());
        if !u.recorded {
            // An empty config dir that was there already is replaced by the move; undo
            // recreates it.
            if is_real_dir(to) {
                u.dir_meta = Some(meta_of(to).map_err(|e| io("cannot stat", to, e))?);
            }
            u.recorded = true;
            save(u)?;
        }
        let from_is_dir = is_real_dir(from);
        match self.method {
            Method::Rename => {
                if !from_is_dir && is_real_dir(to) {
                    return Ok(()); // renamed before a crash
                }
                if exists(to) && !is_placeholder(to) {
                    // An empty config dir that was there already: replaced by the rename.
                    rename(from, to)?;
                } else {
                    switch(from, to, ctx.owner)?;
                }
                sync_dir(ctx.home)?;
                if let Some(p) = to.parent() {
                    sync_dir(p)?;
                }
            }
            Method::VerifiedCopy => {
                let incoming = staging(to, INCOMING);
                if !matches!(u.phase, Some(Phase::Copied | Phase::Placed)) {
                    // (Re)do the copy from scratch: a half-finished copy is never trusted.
                    u.phase = Some(Phase::Copying);
                    save(u)?;
                    copy_to_staging(from, &incoming, ctx)?;
                    failpoint("copied-move-config")?;
                    u.phase = Some(Phase::Copied);
                    save(u)?;
                }
                if u.phase == Some(Phase::Copied) {
                    if exists(&incoming) {
                        rename(&incoming, to)?;
                        if let Some(p) = to.parent() {
                            sync_dir(p)?;
                        }
                    }
                    u.phase = Some(Phase::Placed);
                    save(u)?;
                }
                failpoint("placed-move-config")?;
                // The copy is verified and in place: only now may the source go.
                if exists(from) && is_real_dir(from) {
                    remove_tree(from)?;
                    sync_dir(ctx.home)?;
                }
            }
        }
        Ok(())
    }

    fn undo(&self, u: &mut R, ctx: &Ctx, save: &mut Save<R>) -> Res {
        let (from, to) = (self.from.as_path(), self.to.as_path());
        let recreate_empty = |u: &MoveConfigRecord| -> Result<(), StepError> {
            if let Some(m) = &u.dir_meta {
                if !exists(to) {
                    mkdir(to, m.mode, None)?;
                }
                restore_meta(to, m, ctx.owner.is_some())?;
            }
            Ok(())
        };
        let in_the_way = || {
            StepError::new(format!(
                "'{}' is in the way of moving the config back",
                show(from)
            ))
        };
        let from_is_dir = is_real_dir(from);
        match self.method {
            Method::Rename => {
                if is_placeholder(to) {
                    // Killed between the link's creation and the exchange (or after the
                    // exchange back): the link at the config dir's name is ours.
                    unlink(to, "cannot remove the link")?;
                    sync_parent(to)?;
                }
                if !from_is_dir {
                    if is_real_dir(to) && link_to(from, to) {
                        // `~/.claude` is still the link the exchange left (the link step never
                        // ran, or was undone to it): swap back, so that the name stays resolvable,
                        // then the link (now at the config dir's name) goes.
                        if !exchange(to, from)? {
                            return Err(io(
                                "cannot exchange",
                                from,
                                "the filesystem cannot exchange two names",
                            ));
                        }
                        sync_dir(ctx.home)?;
                        sync_parent(to)?;
                        failpoint("unswitched-move-config")?;
                        unlink(to, "cannot remove the link")?;
                        sync_parent(to)?;
                        return recreate_empty(u);
                    }
                    if exists(from) {
                        return Err(in_the_way());
                    }
                    if is_real_dir(to) {
                        rename(to, from)?;
                        sync_dir(ctx.home)?;
                        sync_parent(to)?;
                    }
                }
            }
            Method::VerifiedCopy if u.phase != Some(Phase::Placed) => {
                // The source was never touched: drop the copy (staged, or already renamed
                // into place if the crash came between the rename and the journal write).
                let incoming = staging(to, INCOMING);
                if exists(&incoming) {
                    remove_tree(&incoming)?;
                    sync_parent(to)?;
                }
                let to_nonempty = std::fs::read_dir(to)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(false);
                if u.phase == Some(Phase::Copied) && from_is_dir && is_real_dir(to) && to_nonempty {
                    remove_tree(to)?;
                    sync_parent(to)?;
                }
            }
            Method::VerifiedCopy => {
                let restore = staging(from, RESTORE);
                if u.undo_phase != Some(UndoPhase::Restored) {
                    if is_real_dir(to) {
                        u.undo_phase = Some(UndoPhase::CopyingBack);
                        save(u)?;
                        copy_to_staging(to, &restore, ctx)?;
                        // Leftovers of an interrupted source removal are duplicates of what
                        // the verified copy holds.
                        if exists(from) {
                            if !from_is_dir {
                                return Err(in_the_way());
                            }
                            remove_tree(from)?;
                        }
                        rename(&restore, from)?;
                        sync_dir(ctx.home)?;
                    }
                    u.undo_phase = Some(UndoPhase::Restored);
                    save(u)?;
                }
                failpoint("undo-remove-config")?;
                if is_real_dir(to) {
                    remove_tree(to)?;
                    sync_parent(to)?;
                }
            }
        }
        recreate_empty(u)
    }

    fn touched_dir(&self) -> Option<PathBuf> {
        self.to.parent().map(Path::to_path_buf)
    }

    fn write_need(&self) -> Option<(PathBuf, &'static str)> {
        Some((
            nearest_existing(self.to.parent().unwrap_or(&self.to)),
            "create the config dir",
        ))
    }
}

/// Whether `p` is a symlink whose text is exactly `target`.
fn link_to(p: &Path, target: &Path) -> bool {
    std::fs::read_link(p).is_ok_and(|t| t == target)
}

/// The link `switch` builds at the config dir's name before the exchange: its text is the config
/// dir's own path (a loop while it sits there; once exchanged, at `~/.claude`, it reaches the
/// config dir).
fn is_placeholder(to: &Path) -> bool {
    link_to(to, to)
}

/// `renameat2(RENAME_EXCHANGE)` of two names, each relative to its directory (see [`at`]):
/// `false` where the filesystem cannot exchange (EINVAL, ENOSYS).
fn exchange(a: &Path, b: &Path) -> Result<bool, StepError> {
    let ((ad, an), (bd, bn)) = (at(a)?, at(b)?);
    match ad.exchange(an, &bd, bn) {
        Ok(()) => Ok(true),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(nix::libc::EINVAL | nix::libc::ENOSYS)
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(io("cannot exchange", a, e)),
    }
}

/// `~/.claude` (`from`, a directory) becomes the config dir (`to`, absent or a placeholder left
/// by a killed run) and, in the same instant, `~/.claude` a link to it: the link is made first at
/// the config dir's name, then `renameat2(RENAME_EXCHANGE)` swaps the two names. An agent that
/// opens `~/.claude/...` at any instant finds it (through the directory or through the link).
/// Where the filesystem cannot exchange (EINVAL), a plain rename, and the link step puts the link
/// back a moment later.
fn switch(from: &Path, to: &Path, owner: Option<(u32, u32)>) -> Res {
    if !is_placeholder(to) {
        let (d, name) = at(to)?;
        d.symlink_at(to, name, owner)
            .map_err(|e| io("cannot create the link", to, e))?;
        failpoint("linked-move-config")?;
    }
    if exchange(from, to)? {
        return Ok(());
    }
    unlink(to, "cannot remove the link")?;
    rename(from, to)
}
