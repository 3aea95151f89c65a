//! The directory steps: `create-shared-dir` (mkdir -p down to the config dir's parent),
//! `create-config-dir`, `remove-empty-claude-dir` (an empty `~/.claude` makes way for the link).
//! `secure-config-dir` (mode 0700, owned by the home's owner) is one step type with
//! `secure-credentials`, in `files.rs`; its undo record is this family's. The record: the
//! directories created (outermost first), or the mode/owner/mtime of the directory removed or
//! re-moded. Every creation and removal goes through a descriptor of the parent opened without
//! following a link the home's owner could have put on the way (`safefs::open_fixed`).

use super::{
    exists, io, is_real_dir, meta_of, mkdir, remove_created_dirs, restore_meta, Ctx, Meta, Record,
    Res, Save, StepError, StepKind, Wire,
};
use crate::fsops::nearest_existing;
use crate::pathser::{self, show};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// This family's undo record.
type R = DirsRecord;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateSharedDir {
    #[serde(with = "pathser::paths")]
    pub dirs: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateConfigDir {
    #[serde(with = "pathser::path")]
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveEmptyClaudeDir {
    #[serde(with = "pathser::path")]
    pub path: PathBuf,
}

/// What undoing a directory step needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirsRecord {
    pub recorded: bool,
    /// Directories the step created, outermost first.
    pub created_dirs: Vec<PathBuf>,
    /// Mode/owner/mtime of the directory removed (an empty `~/.claude`) or re-moded.
    pub dir_meta: Option<Meta>,
}

impl Record for DirsRecord {
    fn from_wire(w: &Wire) -> Result<Self, StepError> {
        Ok(DirsRecord {
            recorded: w.recorded,
            created_dirs: w.created_dirs.clone(),
            dir_meta: w.dir_meta,
        })
    }
    fn to_wire(&self) -> Wire {
        Wire {
            recorded: self.recorded,
            created_dirs: self.created_dirs.clone(),
            dir_meta: self.dir_meta,
            ..Wire::default()
        }
    }
}

fn parent(p: &Path) -> Option<PathBuf> {
    p.parent().map(Path::to_path_buf)
}

fn record_meta(
    path: &Path,
    r: &mut DirsRecord,
    save: &mut Save<DirsRecord>,
) -> Result<(), StepError> {
    if !r.recorded {
        r.dir_meta = Some(meta_of(path).map_err(|e| io("cannot stat", path, e))?);
        r.recorded = true;
        save(r)?;
    }
    Ok(())
}

impl StepKind for CreateSharedDir {
    type Record = R;
    fn summary(&self) -> String {
        format!(
            "create {} (mode 0755, owned by the home's owner)",
            self.dirs
                .iter()
                .map(|p| show(p))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
    fn apply(&self, r: &mut R, ctx: &Ctx, save: &mut Save<R>) -> Res {
        for d in &self.dirs {
            if !r.created_dirs.contains(d) {
                if exists(d) {
                    // It appeared since planning and is not ours: leave it be.
                    continue;
                }
                r.created_dirs.push(d.clone());
                r.recorded = true;
                save(r)?;
            }
            mkdir(d, 0o755, ctx.owner)?;
        }
        Ok(())
    }
    fn undo(&self, r: &mut R, ctx: &Ctx, _: &mut Save<R>) -> Res {
        remove_created_dirs(ctx.home, &r.created_dirs, false)
    }
    fn touched_dir(&self) -> Option<PathBuf> {
        self.dirs.first().and_then(|d| parent(d))
    }
    fn write_need(&self) -> Option<(PathBuf, &'static str)> {
        self.dirs
            .first()
            .map(|d| (nearest_existing(d), "create the shared dir"))
    }
}

impl StepKind for CreateConfigDir {
    type Record = R;
    fn summary(&self) -> String {
        format!(
            "create {} (mode 0700, owned by the home's owner)",
            show(&self.path)
        )
    }
    fn apply(&self, r: &mut R, ctx: &Ctx, save: &mut Save<R>) -> Res {
        if !r.recorded {
            r.recorded = true;
            if !exists(&self.path) {
                r.created_dirs.push(self.path.clone());
            }
            save(r)?;
        }
        mkdir(&self.path, 0o700, ctx.owner)
    }
    fn undo(&self, r: &mut R, ctx: &Ctx, _: &mut Save<R>) -> Res {
        remove_created_dirs(ctx.home, &r.created_dirs, false)
    }
    fn precheck_undo(&self, _: &R) -> Res {
        let path = &self.path;
        // `create-claude-json`'s `{}` is removed by its own undo, which runs first (and refuses
        // if Claude has written to it since).
        let ours = |e: &std::fs::DirEntry| {
            e.file_name() == ".claude.json"
                && std::fs::read(e.path()).is_ok_and(|b| b == super::EMPTY_CLAUDE_JSON)
        };
        if is_real_dir(path)
            && std::fs::read_dir(path)
                .map(|d| d.flatten().any(|e| !ours(&e)))
                .unwrap_or(false)
        {
            return Err(StepError::new(format!(
                "the config dir '{}' was created empty by the migration and now holds files (Claude has run since); undo would have to delete them",
                show(path)
            )));
        }
        Ok(())
    }
    fn touched_dir(&self) -> Option<PathBuf> {
        parent(&self.path)
    }
    fn write_need(&self) -> Option<(PathBuf, &'static str)> {
        Some((
            nearest_existing(self.path.parent().unwrap_or(&self.path)),
            "create the config dir",
        ))
    }
}

impl StepKind for RemoveEmptyClaudeDir {
    type Record = R;
    fn summary(&self) -> String {
        format!("remove the empty directory {}", show(&self.path))
    }
    fn apply(&self, r: &mut R, ctx: &Ctx, save: &mut Save<R>) -> Res {
        let path = &self.path;
        record_meta(path, r, save)?;
        // From the home's descriptor, never through a link on the way (issue 10).
        crate::safefs::rmdir_beneath(ctx.home, path)
            .map(|_| ())
            .map_err(|e| io("cannot remove the empty directory", path, e))
    }
    fn undo(&self, r: &mut R, ctx: &Ctx, _: &mut Save<R>) -> Res {
        if let Some(m) = &r.dir_meta {
            if !exists(&self.path) {
                mkdir(&self.path, m.mode, None)?;
            }
            restore_meta(&self.path, m, ctx.owner.is_some())?;
        }
        Ok(())
    }
    fn write_need(&self) -> Option<(PathBuf, &'static str)> {
        Some((
            self.path.parent().unwrap_or(&self.path).to_path_buf(),
            "replace ~/.claude with a link",
        ))
    }
}
