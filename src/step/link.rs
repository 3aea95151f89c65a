//! `link-claude-dir` and `link-claude-json`: `~/.claude` (or `~/.claude.json`) becomes a
//! symlink into the config dir, replaced atomically. A link that pointed elsewhere is recorded
//! (its target, owner and mtime) and put back by undo.

use super::{
    at, exists, io, meta_of, replace_link, sync_parent, unlink, Ctx, Meta, Record, Res, Save,
    StepError, StepKind, Wire,
};
use crate::atomic::remove_stale_temps;
use crate::pathser::{self, show};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// This family's undo record.
type R = LinkRecord;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    #[serde(with = "pathser::path")]
    pub link: PathBuf,
    #[serde(with = "pathser::path")]
    pub target: PathBuf,
}

/// What undoing a link step needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkRecord {
    pub recorded: bool,
    /// The target of a symlink the step replaced...
    pub prev_link: Option<PathBuf>,
    /// ...and its owner and mtime.
    pub link_meta: Option<Meta>,
    /// The link was already there as wanted (see [`Wire::found_in_place`]).
    pub found_in_place: bool,
}

impl Record for LinkRecord {
    fn from_wire(w: &Wire) -> Result<Self, StepError> {
        Ok(LinkRecord {
            recorded: w.recorded,
            prev_link: w.prev_link.clone(),
            link_meta: w.file_meta,
            found_in_place: w.found_in_place,
        })
    }
    fn to_wire(&self) -> Wire {
        Wire {
            recorded: self.recorded,
            prev_link: self.prev_link.clone(),
            file_meta: self.link_meta,
            found_in_place: self.found_in_place,
            ..Wire::default()
        }
    }
}

impl LinkRecord {
    /// The owner to give a restored link: the old one, when we may chown.
    fn owner(&self, ctx: &Ctx) -> Option<(u32, u32)> {
        self.link_meta
            .map(|m| (m.uid, m.gid))
            .filter(|_| ctx.owner.is_some())
    }
}

impl StepKind for Link {
    type Record = R;

    fn summary(&self) -> String {
        format!("link {} -> {}", show(&self.link), show(&self.target))
    }

    fn apply(&self, u: &mut R, ctx: &Ctx, save: &mut Save<R>) -> Res {
        let (link, target) = (&self.link, &self.target);
        if !u.recorded {
            match std::fs::symlink_metadata(link) {
                Ok(m) if m.file_type().is_symlink() => {
                    let t = std::fs::read_link(link)
                        .map_err(|e| io("cannot read the link", link, e))?;
                    if &t != target {
                        u.prev_link = Some(t);
                        u.link_meta = Some(meta_of(link).map_err(|e| io("cannot stat", link, e))?);
                    }
                }
                Ok(_) => {
                    return Err(StepError::new(format!(
                        "'{}' appeared since planning and is not a link; nothing will replace it",
                        show(link)
                    )))
                }
                Err(_) => {}
            }
            u.found_in_place = already_made(link, target, ctx.owner);
            u.recorded = true;
            save(u)?;
        }
        remove_stale_temps(link);
        if already_made(link, target, ctx.owner) {
            // `move-config` made it, in the same instant as the move (and synced its directory).
            return Ok(());
        }
        replace_link(target, link, ctx.owner)
    }

    fn undo(&self, u: &mut R, ctx: &Ctx, _: &mut Save<R>) -> Res {
        let (link, target) = (&self.link, &self.target);
        if u.found_in_place {
            // Not ours: `move-config` made it, and its undo swaps it back for the directory in
            // one instant (removing it here would leave `~/.claude` missing until then).
            return Ok(());
        }
        remove_stale_temps(link);
        match std::fs::read_link(link) {
            Ok(t) if &t == target => {
                if let Some(prev) = &u.prev_link {
                    replace_link(prev, link, u.owner(ctx))?;
                } else {
                    unlink(link, "cannot remove the link")?;
                    sync_parent(link)?;
                }
            }
            _ => {
                if let (Some(prev), false) = (&u.prev_link, exists(link)) {
                    replace_link(prev, link, u.owner(ctx))?;
                }
            }
        }
        if let (Some(m), Some(_)) = (&u.link_meta, &u.prev_link) {
            let (d, name) = at(link)?;
            let _ = d.set_mtime_at(name, m.mtime);
            d.sync()
                .map_err(|e| io("cannot sync the directory of", link, e))?;
        }
        Ok(())
    }

    fn precheck_undo(&self, u: &R) -> Res {
        let (link, target) = (&self.link, &self.target);
        match std::fs::read_link(link) {
            Ok(t) if &t == target => Ok(()),
            Err(_) if !exists(link) => Ok(()),
            Ok(t) if Some(&t) == u.prev_link.as_ref() => Ok(()),
            _ => Err(StepError::new(format!(
                "'{}' is no longer the link to '{}' that the migration made; undo will not replace it",
                show(link),
                show(target)
            ))),
        }
    }

    fn write_need(&self) -> Option<(PathBuf, &'static str)> {
        Some((
            self.link.parent().unwrap_or(&self.link).to_path_buf(),
            "replace ~/.claude with a link",
        ))
    }
}

/// `link` is already the link to `target`, owned as it should be.
fn already_made(
    link: &std::path::Path,
    target: &std::path::Path,
    owner: Option<(u32, u32)>,
) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_link(link).is_ok_and(|t| t == target)
        && std::fs::symlink_metadata(link)
            .is_ok_and(|m| owner.is_none_or(|(uid, gid)| m.uid() == uid && m.gid() == gid))
}
