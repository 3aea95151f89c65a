//! The two file steps of a real home: `create-claude-json` (a fresh host, or Docker's empty
//! directory at `~/.claude.json`: `<config>/.claude.json` is created as `{}`, 0600, the home
//! owner's, so that `~/.claude.json` can be linked to it and Docker never makes a directory
//! there again) and `secure-credentials` (`.credentials.json` made 0600 and the config dir's
//! owner's when it is wider: the tool is the one moving it into a directory every container
//! mounts). Both act on the file through a descriptor opened without following a symlink.

use super::{io, Ctx, Meta, Record, Res, Save, StepError, StepKind, Wire};
use crate::atomic::set_mtime;
use crate::pathser::{self, show};
use serde::{Deserialize, Serialize};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What `create-claude-json` writes: the smallest global config Claude Code accepts.
pub(crate) const EMPTY_CLAUDE_JSON: &[u8] = b"{}";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateClaudeJson {
    #[serde(with = "pathser::path")]
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecureCredentials {
    #[serde(with = "pathser::path")]
    pub path: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub chown: bool,
}

/// What undoing either step needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileRecord {
    pub recorded: bool,
    /// `create-claude-json`: the file was there already when the step first ran (not ours).
    pub existed: bool,
    /// `create-claude-json`: the config dir's mtime before, put back on undo.
    pub parent_mtime: Option<(i64, i64)>,
    /// `secure-credentials`: the file's mode and owner before.
    pub file_meta: Option<Meta>,
}

impl Record for FileRecord {
    fn from_wire(w: &Wire) -> Result<Self, StepError> {
        Ok(FileRecord {
            recorded: w.recorded,
            existed: w.existed,
            parent_mtime: w.parent_mtime,
            file_meta: w.file_meta,
        })
    }
    fn to_wire(&self) -> Wire {
        Wire {
            recorded: self.recorded,
            existed: self.existed,
            parent_mtime: self.parent_mtime,
            file_meta: self.file_meta,
            ..Wire::default()
        }
    }
}

/// Open a regular file for its metadata and mode changes, never through a symlink.
fn open_nofollow(path: &Path) -> std::io::Result<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)?;
    if !f.metadata()?.file_type().is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(f)
}

fn parent_of(p: &Path) -> &Path {
    p.parent().unwrap_or(Path::new("/"))
}

fn mtime_of(p: &Path) -> Option<(i64, i64)> {
    std::fs::symlink_metadata(p)
        .ok()
        .map(|m| (m.mtime(), m.mtime_nsec()))
}

/// Whether `path` is still the `{}` the step wrote (Claude has not written to it since).
fn still_empty(path: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    let mut f = open_nofollow(path)?;
    let mut b = Vec::new();
    Read::by_ref(&mut f).take(64).read_to_end(&mut b)?;
    Ok(b == EMPTY_CLAUDE_JSON)
}

impl StepKind for CreateClaudeJson {
    type Record = FileRecord;

    fn summary(&self) -> String {
        format!(
            "create {} holding {{}} (mode 0600, owned by the home's owner)",
            show(&self.path)
        )
    }

    fn apply(&self, r: &mut FileRecord, ctx: &Ctx, save: &mut Save<FileRecord>) -> Res {
        let path = &self.path;
        if !r.recorded {
            r.recorded = true;
            r.existed = std::fs::symlink_metadata(path).is_ok();
            r.parent_mtime = mtime_of(parent_of(path));
            save(r)?;
        }
        if r.existed {
            return Ok(());
        }
        // O_EXCL|O_NOFOLLOW: never through a link, never over something that appeared. A file
        // already there after a crash of this step is ours (recorded as not existing before).
        let mut f = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                open_nofollow(path).map_err(|e| io("cannot open", path, e))?;
                std::fs::OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
                    .open(path)
                    .map_err(|e| io("cannot open", path, e))?
            }
            Err(e) => return Err(io("cannot create", path, e)),
        };
        f.write_all(EMPTY_CLAUDE_JSON)
            .map_err(|e| io("cannot write", path, e))?;
        if let Some((u, g)) = ctx.owner {
            std::os::unix::fs::fchown(&f, Some(u), Some(g))
                .map_err(|e| io("cannot give to the home's owner", path, e))?;
        }
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io("cannot chmod 0600", path, e))?;
        f.sync_all().map_err(|e| io("cannot sync", path, e))?;
        super::sync_dir(parent_of(path))
    }

    fn undo(&self, r: &mut FileRecord, _: &Ctx, _: &mut Save<FileRecord>) -> Res {
        let path = &self.path;
        if r.existed {
            return Ok(());
        }
        match still_empty(path) {
            Ok(true) => {
                std::fs::remove_file(path).map_err(|e| io("cannot remove", path, e))?;
            }
            Ok(false) => {
                return Err(StepError::new(format!(
                    "'{}' was created as {{}} by the migration and has been written since (Claude has run); undo would delete it",
                    show(path)
                )))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io("cannot read", path, e)),
        }
        if let Some(t) = r.parent_mtime {
            let dir = parent_of(path);
            if dir.is_dir() {
                set_mtime(dir, t).map_err(|e| io("cannot set the mtime of", dir, e))?;
            }
        }
        Ok(())
    }

    fn precheck_undo(&self, r: &FileRecord) -> Res {
        if r.existed {
            return Ok(());
        }
        match still_empty(&self.path) {
            Ok(false) => Err(StepError::new(format!(
                "'{}' was created as {{}} by the migration and has been written since (Claude has run); undo would delete it",
                show(&self.path)
            ))),
            _ => Ok(()),
        }
    }

    fn write_need(&self) -> Option<(PathBuf, &'static str)> {
        None
    }
}

impl StepKind for SecureCredentials {
    type Record = FileRecord;

    fn summary(&self) -> String {
        format!(
            "set {} to mode 0600, owned by the config dir's owner",
            show(&self.path)
        )
    }

    fn apply(&self, r: &mut FileRecord, _: &Ctx, save: &mut Save<FileRecord>) -> Res {
        let path = &self.path;
        let f = open_nofollow(path).map_err(|e| io("cannot open", path, e))?;
        if !r.recorded {
            let m = f.metadata().map_err(|e| io("cannot stat", path, e))?;
            r.file_meta = Some(Meta {
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                mtime: (m.mtime(), m.mtime_nsec()),
            });
            r.recorded = true;
            save(r)?;
        }
        // Narrow first, then hand over: at no point is it readable by more than before.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io("cannot chmod 0600", path, e))?;
        if self.chown {
            std::os::unix::fs::fchown(&f, Some(self.uid), Some(self.gid))
                .map_err(|e| io("cannot give to the config dir's owner", path, e))?;
        }
        Ok(())
    }

    fn undo(&self, r: &mut FileRecord, ctx: &Ctx, _: &mut Save<FileRecord>) -> Res {
        let path = &self.path;
        let Some(m) = r.file_meta else {
            return Ok(());
        };
        let f = match open_nofollow(path) {
            Ok(f) => f,
            // Gone with the tree (the move's undo brings it back, mode included).
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io("cannot open", path, e)),
        };
        if ctx.owner.is_some() || self.chown {
            std::os::unix::fs::fchown(&f, Some(m.uid), Some(m.gid))
                .map_err(|e| io("cannot give back to its owner", path, e))?;
        }
        f.set_permissions(std::fs::Permissions::from_mode(m.mode))
            .map_err(|e| io("cannot chmod", path, e))
    }
}
