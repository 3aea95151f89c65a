//! The two file steps of a real home: `create-claude-json` (a fresh host, or Docker's empty
//! directory at `~/.claude.json`: `<config>/.claude.json` is created as `{}`, 0600, the home
//! owner's, so that `~/.claude.json` can be linked to it and Docker never makes a directory
//! there again) and `secure-credentials` (`.credentials.json` made 0600 and the config dir's
//! owner's when it is wider: the tool is the one moving it into a directory every container
//! mounts). Both act on the file through a descriptor opened without following a symlink.

use super::{
    fd_meta, give_back, io, narrow, Ctx, Meta, Record, Res, Save, StepError, StepKind, Wire,
};
use crate::pathser::{self, show};
use nix::fcntl::OFlag;
use serde::{Deserialize, Serialize};
use std::ffi::OsStr;
use std::io::{ErrorKind, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// `secure-config-dir`: one step with `secure-credentials` (see [`Secure`]).
pub type SecureConfigDir = Secure<true>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateClaudeJson {
    #[serde(with = "pathser::path")]
    pub path: PathBuf,
}

/// `secure-config-dir` (`Secure<true>`: the config dir ends 0700) and `secure-credentials`
/// (`Secure<false>`: `.credentials.json` ends 0600): the object at `path`, opened without
/// following a link, narrowed to its mode and, when `chown`, given to `uid:gid`. One type and
/// one apply and undo for both: only what is opened, the mode and where the undo record keeps
/// the old metadata differ ([`Secured`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secure<const DIR: bool> {
    #[serde(with = "pathser::path")]
    pub path: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub chown: bool,
}

pub type SecureCredentials = Secure<false>;

/// What differs between the two [`Secure`] steps.
pub trait Secured {
    type Record: Record;
    /// The mode it ends with.
    const MODE: u32;
    /// Who it ends owned by, for the summary.
    const WHOSE: &'static str;
    /// The object, opened without following a link at its name.
    fn open(path: &Path) -> Result<Box<dyn AsFd>, StepError>;
    /// Nothing of ours to give back there (gone, or no longer a real directory): undo skips.
    fn gone(path: &Path) -> bool;
    /// Where its record keeps whether the old metadata is recorded, and that metadata.
    fn meta(r: &mut Self::Record) -> (&mut bool, &mut Option<Meta>);
}

impl Secured for Secure<true> {
    type Record = super::dirs::DirsRecord;
    const MODE: u32 = 0o700;
    const WHOSE: &'static str = "the home's owner";
    fn open(path: &Path) -> Result<Box<dyn AsFd>, StepError> {
        Ok(Box::new(super::anchor(path)?.0))
    }
    fn gone(path: &Path) -> bool {
        !super::is_real_dir(path)
    }
    fn meta(r: &mut Self::Record) -> (&mut bool, &mut Option<Meta>) {
        (&mut r.recorded, &mut r.dir_meta)
    }
}

impl Secured for Secure<false> {
    type Record = FileRecord;
    const MODE: u32 = 0o600;
    const WHOSE: &'static str = "the config dir's owner";
    fn open(path: &Path) -> Result<Box<dyn AsFd>, StepError> {
        let f = open_nofollow(path).map_err(|e| io("cannot open", path, e))?;
        Ok(Box::new(f))
    }
    fn gone(path: &Path) -> bool {
        // Gone with the tree (the move's undo brings it back, mode included).
        !super::exists(path)
    }
    fn meta(r: &mut Self::Record) -> (&mut bool, &mut Option<Meta>) {
        (&mut r.recorded, &mut r.file_meta)
    }
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

/// The directory holding `path`, opened without following a link the home's owner could have
/// put on the way (the config dir is in a shared dir that is theirs; issue 10), and its name.
fn at(path: &Path) -> std::io::Result<(crate::safefs::Dir, &OsStr)> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("no file name"))?;
    Ok((crate::safefs::open_fixed(parent_of(path))?, name))
}

/// Open the regular file `name` of `dir` for reading, its metadata and mode changes, never
/// through a symlink.
fn open_regular(dir: &crate::safefs::Dir, name: &OsStr) -> std::io::Result<std::fs::File> {
    let f = dir.open_file(name, OFlag::O_RDONLY | OFlag::O_NONBLOCK, 0)?;
    if !f.metadata()?.file_type().is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(f)
}

/// [`open_regular`] of the file at `path`, reached through [`at`].
fn open_nofollow(path: &Path) -> std::io::Result<std::fs::File> {
    let (dir, name) = at(path)?;
    open_regular(&dir, name)
}

fn parent_of(p: &Path) -> &Path {
    p.parent().unwrap_or(Path::new("/"))
}

fn mtime_of(p: &Path) -> Option<(i64, i64)> {
    std::fs::symlink_metadata(p)
        .ok()
        .map(|m| (m.mtime(), m.mtime_nsec()))
}

/// Whether `f` still holds the `{}` the step wrote (Claude has not written to it since).
fn still_empty(f: std::io::Result<std::fs::File>) -> std::io::Result<bool> {
    use std::io::Read;
    let mut b = Vec::new();
    Read::by_ref(&mut f?).take(64).read_to_end(&mut b)?;
    Ok(b == super::EMPTY_CLAUDE_JSON)
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
        let (dir, name) = at(path).map_err(|e| io("cannot open the directory of", path, e))?;
        // O_EXCL|O_NOFOLLOW in the opened directory: never through a link, never over something
        // that appeared. A file already there after a crash of this step is ours (recorded as
        // not existing before).
        let mut f = match dir.open_file(
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL,
            0o600,
        ) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                open_regular(&dir, name).map_err(|e| io("cannot open", path, e))?;
                dir.open_file(name, OFlag::O_WRONLY | OFlag::O_TRUNC, 0)
                    .map_err(|e| io("cannot open", path, e))?
            }
            Err(e) => return Err(io("cannot create", path, e)),
        };
        f.write_all(super::EMPTY_CLAUDE_JSON)
            .map_err(|e| io("cannot write", path, e))?;
        if let Some((u, g)) = ctx.owner {
            std::os::unix::fs::fchown(&f, Some(u), Some(g))
                .map_err(|e| io("cannot give to the home's owner", path, e))?;
        }
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io("cannot chmod 0600", path, e))?;
        f.sync_all().map_err(|e| io("cannot sync", path, e))?;
        dir.sync().map_err(|e| io("cannot sync", dir.path(), e))
    }

    fn undo(&self, r: &mut FileRecord, _: &Ctx, _: &mut Save<FileRecord>) -> Res {
        let path = &self.path;
        if r.existed {
            return Ok(());
        }
        let (dir, name) = match at(path) {
            Ok(x) => x,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io("cannot open the directory of", path, e)),
        };
        match still_empty(open_regular(&dir, name)) {
            Ok(true) => {
                dir.unlink(name)
                    .map_err(|e| io("cannot remove", path, e))?;
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
            // On the opened directory (futimens), then fsynced: its entry's removal and its
            // time reach the disk before the journal says the step is undone.
            dir.set_mtime(t)
                .map_err(|e| io("cannot set the mtime of", dir.path(), e))?;
        }
        dir.sync().map_err(|e| io("cannot sync", dir.path(), e))
    }

    fn precheck_undo(&self, r: &FileRecord) -> Res {
        if r.existed {
            return Ok(());
        }
        match still_empty(open_nofollow(&self.path)) {
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

impl<const DIR: bool> StepKind for Secure<DIR>
where
    Secure<DIR>: Secured,
{
    type Record = <Self as Secured>::Record;

    fn summary(&self) -> String {
        format!(
            "set {} to mode {:04o}, owned by {}",
            show(&self.path),
            <Self as Secured>::MODE,
            <Self as Secured>::WHOSE
        )
    }

    fn apply(&self, r: &mut Self::Record, _: &Ctx, save: &mut Save<Self::Record>) -> Res {
        let path = &self.path;
        // On the opened object, never through a link put in its place (issue 10 finding 9).
        let f = <Self as Secured>::open(path)?;
        let newly = match <Self as Secured>::meta(r) {
            (recorded, _) if *recorded => false,
            (recorded, meta) => {
                *meta = Some(fd_meta(f.as_fd(), path)?);
                *recorded = true;
                true
            }
        };
        if newly {
            save(r)?;
        }
        let give = Some((self.uid, self.gid)).filter(|_| self.chown);
        narrow(f.as_fd(), path, <Self as Secured>::MODE, give)
    }

    fn undo(&self, r: &mut Self::Record, ctx: &Ctx, _: &mut Save<Self::Record>) -> Res {
        let path = &self.path;
        let Some(m) = *<Self as Secured>::meta(r).1 else {
            return Ok(());
        };
        if <Self as Secured>::gone(path) {
            return Ok(());
        }
        let f = <Self as Secured>::open(path)?;
        give_back(
            f.as_fd(),
            path,
            &m,
            ctx.owner.is_some() || self.chown,
            false,
        )
    }
}
