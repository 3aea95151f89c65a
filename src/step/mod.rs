//! The steps of a migration, one file per family: what each one plans (its data, serialised
//! into the journal), says (its summary), does (apply, idempotent, finishing a half-done change
//! after a crash), undoes, checks before undoing, which directories it touches, and what its
//! undo needs (its own record, with typed phases).
//!
//! | file | steps |
//! |---|---|
//! | `dirs.rs` | `create-shared-dir`, `create-config-dir`, `remove-empty-claude-dir`, `remove-empty-claude-json-dir` |
//! | `move_config.rs` | `move-config` (rename, or verified copy in phases) |
//! | `claude_json.rs` | `move-claude-json` |
//! | `files.rs` | `create-claude-json`; `secure-config-dir` and `secure-credentials` (one type, `Secure`) |
//! | `rewrite_links.rs` | `rewrite-links` (relative links that leave `~/.claude`) |
//! | `link.rs` | `link-claude-dir`, `link-claude-json` |
//! | `write_file.rs` | `write-env-file`, `write-profile` |
//! | `verify.rs` | `verify` (no change: the checks run after the transaction) |
//!
//! The transaction (`txn`) drives every step through [`apply`], [`undo`] and [`precheck_undo`];
//! each step family implements [`StepKind`]. Adding a step is adding a file with a `StepKind`
//! and one line in the `steps!` list below. The journal keeps the undo records in one flat
//! wire form ([`Wire`], the JSON of every journal written so far); each family converts it to
//! and from its own typed record ([`Record`]).
//!
//! Steps only touch the filesystem and fill in their record *before* each change, calling
//! `save` so it is durable first; the journal protocol itself lives in `txn`.

mod claude_json;
mod dirs;
mod files;
mod link;
mod move_config;
mod rewrite_links;
mod verify;
mod wire;
mod write_file;

pub(crate) use claude_json::MoveClaudeJson;
pub(crate) use dirs::{CreateConfigDir, CreateSharedDir, RemoveEmptyClaudeDir};
pub(crate) use files::{CreateClaudeJson, SecureConfigDir, SecureCredentials};

/// What `create-claude-json` writes: the smallest global config Claude Code accepts (and what
/// `remove-empty-claude-json-dir` recognises as ours).
pub(crate) const EMPTY_CLAUDE_JSON: &[u8] = b"{}";
pub(crate) use link::Link;
pub(crate) use move_config::MoveConfig;
pub(crate) use rewrite_links::{leaving_links, rewrite_detail, LinkRewrite, RewriteLinks};
pub(crate) use verify::Verify;
pub(crate) use write_file::{changed_lines, WriteEnvFile, WriteProfile};

pub use wire::{Meta, Wire};

use crate::failpoint::failpoint;
use crate::fsops::{self, CopyOptions};
use crate::pathser::show;
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::io::ErrorKind;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// How a tree or file crosses to the config dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// rename(2): one filesystem, O(1), nothing copied.
    Rename,
    /// Different filesystems: copy, verify every byte against the source, then remove the source.
    VerifiedCopy,
}

impl Method {
    /// rename(2) where it works, a verified copy where it cannot (EXDEV).
    pub fn for_same_fs(same_fs: bool) -> Method {
        if same_fs {
            Method::Rename
        } else {
            Method::VerifiedCopy
        }
    }
}

/// A step failed; `message` says what and where, `source` keeps the error underneath (if any)
/// so the chain reaches the report.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
    pub message: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl StepError {
    pub fn new(message: impl Into<String>) -> Self {
        StepError {
            message: message.into(),
            source: None,
        }
    }

    fn caused_by(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StepError {
            message: e.to_string(),
            source: Some(Box::new(e)),
        }
    }
}

impl From<fsops::FsError> for StepError {
    fn from(e: fsops::FsError) -> Self {
        StepError::caused_by(e)
    }
}

/// A failpoint's injected failure (or any plain I/O error) becomes the step's error as is.
impl From<std::io::Error> for StepError {
    fn from(e: std::io::Error) -> Self {
        StepError::caused_by(e)
    }
}

/// What a step's apply, undo or check returns.
pub type Res = Result<(), StepError>;

/// What steps need besides their own parameters.
pub struct Ctx<'a> {
    /// Hand what we create to the home's owner (we run as root for them).
    pub owner: Option<(u32, u32)>,
    pub home: &'a Path,
    pub shared_dir: &'a Path,
    pub config_dir: &'a Path,
    pub progress: &'a (dyn Fn(u64, u64) + Sync),
}

/// Persist the journal with the step's current undo record.
pub type Save<'s, R> = dyn FnMut(&R) -> Result<(), StepError> + 's;

/// A step family's undo record, and its conversion from and to the journal's wire form.
pub trait Record: Default + Clone {
    /// The typed record of a journal entry (an unknown phase is an error, never guessed).
    fn from_wire(w: &Wire) -> Result<Self, StepError>;
    /// The wire form: exactly the fields (and JSON) the journal has always had.
    fn to_wire(&self) -> Wire;
}

/// One step family: how it reads, applies, undoes and checks itself.
pub trait StepKind {
    type Record: Record;
    /// One line for people, with the real paths, counts and sizes.
    fn summary(&self) -> String;
    /// Apply (or finish applying): idempotent, records what undo needs before each change.
    fn apply(
        &self,
        r: &mut Self::Record,
        ctx: &Ctx,
        save: &mut Save<Self::Record>,
    ) -> Result<(), StepError>;
    /// Undo (or finish undoing) a started or done step.
    fn undo(
        &self,
        r: &mut Self::Record,
        ctx: &Ctx,
        save: &mut Save<Self::Record>,
    ) -> Result<(), StepError>;
    /// Before anything is undone: will undoing this clobber an edit or lose data written since?
    /// Read-only.
    fn precheck_undo(&self, _r: &Self::Record) -> Result<(), StepError> {
        Ok(())
    }
    /// The directory whose entries (and so mtime) the step changes, to put back on a full
    /// rollback; `None` when it only changes what it owns.
    fn touched_dir(&self) -> Option<PathBuf> {
        None
    }
    /// The directory the step must be able to write, and what for (the permission preflight
    /// of an unprivileged run).
    fn write_need(&self) -> Option<(PathBuf, &'static str)> {
        None
    }
    /// The file it rewrites, if it rewrites one (several runs may rewrite the same file).
    fn written_file(&self) -> Option<&Path> {
        None
    }
}

/// [`StepKind::apply`] or [`StepKind::undo`] of step kind `K`.
type KindOp<K> = fn(
    &K,
    &mut <K as StepKind>::Record,
    &Ctx,
    &mut Save<<K as StepKind>::Record>,
) -> Result<(), StepError>;

/// Run `op` on the typed record of `w`, saving and keeping the wire form.
fn run<K: StepKind>(
    k: &K,
    w: &mut Wire,
    ctx: &Ctx,
    save: &mut Save<Wire>,
    op: KindOp<K>,
) -> Result<(), StepError> {
    let mut r = K::Record::from_wire(w)?;
    let res = op(k, &mut r, ctx, &mut |r: &K::Record| save(&r.to_wire()));
    *w = r.to_wire();
    res
}

fn precheck<K: StepKind>(k: &K, w: &Wire) -> Result<(), StepError> {
    k.precheck_undo(&K::Record::from_wire(w)?)
}

/// The registry: one line per step (its stable kebab-case id, its variant, its type). Makes
/// the `Step` enum (serialised tagged by the id, exactly as the journal and `--json` have it)
/// and the dispatch to each [`StepKind`].
macro_rules! steps {
    ($($(#[$m:meta])* $id:literal => $var:ident($ty:ty),)*) => {
        /// One step of a migration, with everything it needs to apply itself. Serialized into
        /// the journal, so a resumed or undone run acts on exactly what was planned.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(tag = "id")]
        pub enum Step {
            $($(#[$m])* #[serde(rename = $id)] $var($ty),)*
        }

        impl Step {
            /// The stable kebab-case id of the contract.
            pub fn id(&self) -> &'static str {
                match self { $(Step::$var(_) => $id,)* }
            }
            /// One line for people, with the real paths, counts and sizes.
            pub fn summary(&self) -> String {
                match self { $(Step::$var(s) => s.summary(),)* }
            }
            /// See [`StepKind::touched_dir`].
            pub fn touched_dir(&self) -> Option<PathBuf> {
                match self { $(Step::$var(s) => s.touched_dir(),)* }
            }
            /// See [`StepKind::write_need`].
            pub fn write_need(&self) -> Option<(PathBuf, &'static str)> {
                match self { $(Step::$var(s) => s.write_need(),)* }
            }
            /// See [`StepKind::written_file`].
            pub fn written_file(&self) -> Option<&Path> {
                match self { $(Step::$var(s) => s.written_file(),)* }
            }
            fn apply_kind(&self, w: &mut Wire, ctx: &Ctx, save: &mut Save<Wire>) -> Result<(), StepError> {
                match self { $(Step::$var(s) => run(s, w, ctx, save, <$ty as StepKind>::apply),)* }
            }
            fn undo_kind(&self, w: &mut Wire, ctx: &Ctx, save: &mut Save<Wire>) -> Result<(), StepError> {
                match self { $(Step::$var(s) => run(s, w, ctx, save, <$ty as StepKind>::undo),)* }
            }
            /// The wire form read as this step's typed record and written back.
            #[cfg(test)]
            fn typed_wire(&self, w: &Wire) -> Result<Wire, StepError> {
                match self { $(Step::$var(_) => <$ty as StepKind>::Record::from_wire(w).map(|r| r.to_wire()),)* }
            }
            fn precheck_kind(&self, w: &Wire) -> Result<(), StepError> {
                match self { $(Step::$var(s) => precheck(s, w),)* }
            }
        }
    };
}

steps! {
    /// Create the missing directories down to the config dir's parent (outermost first).
    "create-shared-dir" => CreateSharedDir(CreateSharedDir),
    "create-config-dir" => CreateConfigDir(CreateConfigDir),
    /// An empty `~/.claude` makes way for the link.
    "remove-empty-claude-dir" => RemoveEmptyClaudeDir(RemoveEmptyClaudeDir),
    "move-config" => MoveConfig(MoveConfig),
    /// Relative links that leave `~/.claude` get the absolute text that reaches the same file.
    "rewrite-links" => RewriteLinks(RewriteLinks),
    /// The config dir ends mode 0700, owned by the home's owner.
    "secure-config-dir" => SecureConfigDir(SecureConfigDir),
    /// `.credentials.json` ends 0600, the config dir's owner's.
    "secure-credentials" => SecureCredentials(SecureCredentials),
    "move-claude-json" => MoveClaudeJson(MoveClaudeJson),
    /// Docker's empty directory at `~/.claude.json` makes way for the link.
    "remove-empty-claude-json-dir" => RemoveEmptyClaudeJsonDir(RemoveEmptyClaudeDir),
    /// No `.claude.json` anywhere: `<config>/.claude.json` starts as `{}`.
    "create-claude-json" => CreateClaudeJson(CreateClaudeJson),
    "link-claude-dir" => LinkClaudeDir(Link),
    "link-claude-json" => LinkClaudeJson(Link),
    "write-env-file" => WriteEnvFile(WriteEnvFile),
    "write-profile" => WriteProfile(WriteProfile),
    "verify" => Verify(Verify),
}

impl Step {
    /// Whether this step changes anything on disk (verify does not).
    pub fn changes(&self) -> bool {
        !matches!(self, Step::Verify(_))
    }
}

/// Apply (or finish applying) one step, between its `apply-<id>` and `applied-<id>` failpoints.
pub fn apply(step: &Step, w: &mut Wire, ctx: &Ctx, save: &mut Save<Wire>) -> Result<(), StepError> {
    failpoint(&format!("apply-{}", step.id()))?;
    step.apply_kind(w, ctx, save)?;
    failpoint(&format!("applied-{}", step.id()))?;
    Ok(())
}

/// Undo (or finish undoing) one step that was started or done.
pub fn undo(step: &Step, w: &mut Wire, ctx: &Ctx, save: &mut Save<Wire>) -> Result<(), StepError> {
    failpoint(&format!("undo-{}", step.id()))?;
    step.undo_kind(w, ctx, save)
}

/// Check, before anything is undone, that undoing this step will not clobber someone's edit
/// or lose data written since. Read-only.
pub fn precheck_undo(step: &Step, w: &Wire) -> Result<(), StepError> {
    step.precheck_kind(w)
}

// Helpers shared by the step families.

fn io(what: impl std::fmt::Display, path: &Path, e: impl std::fmt::Display) -> StepError {
    StepError::new(format!("{what} '{}': {e}", show(path)))
}

/// A directory the home's owner may swap for a link (the config dir, in a shared dir handed to
/// them) opened without following a link at its name, and a path that names that opened
/// directory whatever happens to its name meanwhile (`/proc/self/fd/N/.`), for the path-based
/// operations inside it (issue 10 finding 9: the config dir swapped for a link right after the
/// rename).
fn anchor(dir: &Path) -> Result<(crate::safefs::Dir, PathBuf), StepError> {
    let d = open_dir(dir)?;
    let p = fd_path(&d).join(".");
    Ok((d, p))
}

/// `/proc/self/fd/N`: the opened directory `d` as a path (see [`is_anchor`]).
fn fd_path(d: &crate::safefs::Dir) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", d.raw()))
}

/// Mode, owner and mtime of an opened directory.
fn dir_meta(d: &crate::safefs::Dir) -> Result<Meta, StepError> {
    fd_meta(d.as_fd(), d.path())
}

/// Mode, owner and mtime of an opened file or directory (`path` for messages only).
fn fd_meta(fd: BorrowedFd<'_>, path: &Path) -> Result<Meta, StepError> {
    let st = nix::sys::stat::fstat(fd).map_err(|e| io("cannot stat", path, e))?;
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    Ok(Meta {
        mode: (st.st_mode & 0o7777) as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        mtime: (st.st_mtime as i64, st.st_mtime_nsec as i64),
    })
}

/// What `secure-config-dir` and `secure-credentials` do, on the descriptor they opened without
/// following a link (never through a link put in its place, issue 10 finding 9): narrow it to
/// `mode` first, then hand it to `give` (so at no point can more people read it than before),
/// then fsync it. `path` is for messages only.
fn narrow(fd: BorrowedFd<'_>, path: &Path, mode: u32, give: Option<(u32, u32)>) -> Res {
    nix::sys::stat::fchmod(fd, nix::sys::stat::Mode::from_bits_truncate(mode as _))
        .map_err(|e| io(format!("cannot chmod {mode:04o}"), path, e))?;
    if let Some((u, g)) = give {
        nix::unistd::fchown(fd, Some(u.into()), Some(g.into()))
            .map_err(|e| io("cannot give to the home's owner", path, e))?;
    }
    nix::unistd::fsync(fd).map_err(|e| io("cannot sync", path, e))
}

/// Put a recorded mode and owner (when `chown_it`) back on an opened file or directory, and its
/// mtime when `mtime`, then fsync it: the undo of [`narrow`], and of any directory the
/// migration removed or re-moded. The owner goes first (a chown can clear set-id bits).
fn give_back(fd: BorrowedFd<'_>, path: &Path, m: &Meta, chown_it: bool, mtime: bool) -> Res {
    if chown_it {
        nix::unistd::fchown(fd, Some(m.uid.into()), Some(m.gid.into()))
            .map_err(|e| io("cannot give back", path, e))?;
    }
    nix::sys::stat::fchmod(fd, nix::sys::stat::Mode::from_bits_truncate(m.mode as _))
        .map_err(|e| io("cannot chmod", path, e))?;
    if mtime {
        let omit = nix::sys::time::TimeSpec::new(0, (1 << 30) - 2); // UTIME_OMIT: atime kept
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
        let t = nix::sys::time::TimeSpec::new(m.mtime.0 as _, m.mtime.1 as _);
        nix::sys::stat::futimens(fd, &omit, &t)
            .map_err(|e| io("cannot set the mtime of", path, e))?;
    }
    nix::unistd::fsync(fd).map_err(|e| io("cannot sync", path, e))
}

fn meta_of(path: &Path) -> std::io::Result<Meta> {
    let m = std::fs::symlink_metadata(path)?;
    Ok(Meta {
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime: (m.mtime(), m.mtime_nsec()),
    })
}

fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

fn is_real_dir(p: &Path) -> bool {
    std::fs::symlink_metadata(p)
        .map(|m| m.is_dir())
        .unwrap_or(false)
}

fn mkdir(path: &Path, mode: u32, owner: Option<(u32, u32)>) -> Result<(), StepError> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io("cannot create", path, "it has no parent"));
    };
    // mkdirat in the parent opened without following a link the home's owner could have put
    // on the way, then mode and owner on the new directory's own descriptor (issue 10).
    let pd = open_dir(parent)?;
    match pd.mkdir_at(name, mode) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io("cannot create", path, e)),
    }
    let d = pd.sub(name).map_err(|e| io("cannot open", path, e))?;
    d.set_mode(mode).map_err(|e| io("cannot chmod", path, e))?;
    if let Some((u, g)) = owner {
        d.set_owner(u, g)
            .map_err(|e| io("cannot give to the home's owner", path, e))?;
    }
    // The directory (mode, owner) and its name in the parent reach the disk before the journal
    // records the step done.
    d.sync().map_err(|e| io("cannot sync", path, e))?;
    pd.sync().map_err(|e| io("cannot sync", parent, e))
}

/// A directory opened by [`safefs::open_fixed`](crate::safefs::open_fixed): from the deepest
/// ancestor only root (or the running user) can change, the rest walked with `O_NOFOLLOW`, so
/// a directory the home's owner swapped for a link on the way is an error, never followed.
fn open_dir(dir: &Path) -> Result<crate::safefs::Dir, StepError> {
    let opened = if is_anchor(dir) {
        crate::safefs::Dir::open(dir)
    } else {
        crate::safefs::open_fixed(dir)
    };
    opened.map_err(|e| io("cannot open", dir, e))
}

/// `/proc/self/fd/N` (or `/proc/self/fd/N/.`): a directory this process opened itself (see
/// [`anchor`]); following that link reaches the descriptor, not a path anyone could change.
fn is_anchor(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let b = dir.as_os_str().as_bytes();
    let b = b.strip_suffix(b"/.").unwrap_or(b);
    b.strip_prefix(b"/proc/self/fd/")
        .is_some_and(|n| !n.is_empty() && n.iter().all(u8::is_ascii_digit))
}

/// fsync the directory holding `path`: after a name in it was created, renamed or removed, or
/// after the metadata of a symlink in it changed (a symlink cannot be fsynced itself). The
/// directory is opened as [`open_dir`] does (`O_DIRECTORY`, never through a link the home's
/// owner put on the way) and fsynced through that descriptor.
fn sync_parent(path: &Path) -> Result<(), StepError> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => sync_dir(p),
        _ => Ok(()),
    }
}

/// Remove the directories a step created (`dirs` outermost first), innermost first, each with
/// `unlinkat(AT_REMOVEDIR)` from its parent opened without following a link the home's owner
/// could have put on the way ([`safefs::rmdir_beneath`](crate::safefs::rmdir_beneath)), the
/// parent fsynced after each removal. Already gone is fine (a resumed undo). `best_effort`:
/// one that cannot go (it holds files now, or a link is on its way) is left and the others
/// tried; otherwise that is the error.
fn remove_created_dirs(home: &Path, dirs: &[PathBuf], best_effort: bool) -> Res {
    for d in dirs.iter().rev() {
        match crate::safefs::rmdir_beneath(home, d) {
            Ok(_) => {}
            Err(_) if best_effort => {}
            Err(e) => {
                return Err(io(
                    "cannot remove the directory the migration created",
                    d,
                    e,
                ))
            }
        }
    }
    Ok(())
}

/// Put a directory's mode, owner and mtime back, on the opened directory (never through a link
/// put in its place).
fn restore_meta(path: &Path, m: &Meta, chown_it: bool) -> Result<(), StepError> {
    let (d, _) = anchor(path)?;
    give_back(d.as_fd(), path, m, chown_it, true)
}

/// `<to><suffix>`: where a copy is staged before one rename puts it in place.
fn staging(to: &Path, suffix: &str) -> PathBuf {
    let mut s: OsString = to.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The staging name of a copy on its way into the config dir.
pub(crate) const INCOMING: &str = ".dci-incoming";
/// The staging name of a copy on its way back (undo).
pub(crate) const RESTORE: &str = ".dci-restore";

fn copy_options(ctx: &Ctx) -> CopyOptions {
    CopyOptions {
        preserve_owner: ctx.owner.is_some(),
    }
}

/// A verified copy of the tree `src` at `staging`, from scratch: whatever an interrupted
/// attempt left there is removed first, never trusted.
fn copy_to_staging(src: &Path, staging: &Path, ctx: &Ctx) -> Result<(), StepError> {
    let ((_s, src), (_d, staging)) = (through_parent(src)?, through_parent(staging)?);
    if exists(&staging) {
        fsops::remove_tree(&staging)?;
    }
    fsops::copy_tree_verified(&src, &staging, &copy_options(ctx), ctx.progress)?;
    Ok(())
}

/// `path` named through its directory, opened as [`open_dir`] does: `/proc/self/fd/N/<name>`,
/// for `fsops`'s path-based work (the verified copies, the removal of a tree), so that the kernel
/// never again resolves the directories on `path`'s way, which the home's owner may swap. Keep
/// the [`Dir`](crate::safefs::Dir) while the path is used.
fn through_parent(path: &Path) -> Result<(crate::safefs::Dir, PathBuf), StepError> {
    let (d, name) = at(path)?;
    let p = fd_path(&d).join(name);
    Ok((d, p))
}

/// `rm -r` of `path` without following a link (see [`fsops::remove_tree`]), named through its
/// directory ([`through_parent`]). Already gone is fine.
fn remove_tree(path: &Path) -> Result<(), StepError> {
    let (_d, p) = through_parent(path)?;
    fsops::remove_tree(&p)?;
    Ok(())
}

/// The directory holding `path`, opened as [`open_dir`] does (never through a link the home's
/// owner put on the way), and `path`'s own name in it: every change to a name in the home or
/// the shared dirs is made relative to that descriptor (`renameat`, `unlinkat`, `symlinkat`,
/// `utimensat`), so the kernel resolves no path through a directory its owner could swap.
fn at(path: &Path) -> Result<(crate::safefs::Dir, &std::ffi::OsStr), StepError> {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => Ok((open_dir(parent)?, name)),
        _ => Err(io("cannot open the directory of", path, "it has no parent")),
    }
}

/// rename(2) of one name to another, each relative to its directory (see [`at`]), with an
/// error that names both paths.
fn rename(from: &Path, to: &Path) -> Result<(), StepError> {
    let ((fd, f), (td, t)) = (at(from)?, at(to)?);
    fd.rename_to(f, &td, t).map_err(|e| {
        StepError::new(format!(
            "cannot rename '{}' to '{}': {e}",
            show(from),
            show(to)
        ))
    })
}

/// Remove the non-directory `path` (a link, a file) relative to its directory (see [`at`]);
/// already gone is fine.
fn unlink(path: &Path, what: &str) -> Result<(), StepError> {
    let (d, name) = at(path)?;
    d.unlink(name).map_err(|e| io(what, path, e))
}

/// Create or replace `link` with a symlink to `target`, atomically, owned by `owner`, relative
/// to its directory (see [`at`] and [`Dir::replace_with_link`](crate::safefs::Dir::replace_with_link)).
fn replace_link(target: &Path, link: &Path, owner: Option<(u32, u32)>) -> Result<(), StepError> {
    let (d, name) = at(link)?;
    let tmp = crate::atomic::symlink_temp(link);
    let tmp = tmp.file_name().unwrap_or_default();
    d.replace_with_link(target, name, tmp, owner)
        .map_err(|e| io("cannot link", link, e))
}

/// fsync the directory `dir`, opened as [`open_dir`] does.
fn sync_dir(dir: &Path) -> Result<(), StepError> {
    open_dir(dir)?.sync().map_err(|e| io("cannot sync", dir, e))
}

fn hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// `12.3 MiB` style sizes for summaries.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests;
