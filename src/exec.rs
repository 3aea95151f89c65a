//! Applying and undoing steps. Each step knows how to do itself, how to finish itself after a
//! crash (apply is idempotent and tells "done" from "half done"), and how to undo itself.
//!
//! The journal protocol lives in `txn`; this module only touches the filesystem and fills in
//! the step's `Undo` record *before* each change, calling `save` so it is durable first.

use crate::atomic::{self, remove_stale_temps, set_mtime};
use crate::envfile;
use crate::failpoint::failpoint;
use crate::fsops::{self, CopyOptions};
use crate::journal::{Meta, Undo};
use crate::pathser::show;
use crate::plan::{Method, Step};
use crate::profile::{self, ShellKind};
use std::ffi::{OsStr, OsString};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A step failed; `message` says what and where, `source` keeps the error underneath (if any)
/// so the chain reaches the report.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
    pub message: String,
    /// Undo refused because a file was changed since (exit 3, not 6).
    pub changed_since: bool,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl StepError {
    pub fn new(message: impl Into<String>) -> Self {
        StepError {
            message: message.into(),
            changed_since: false,
            source: None,
        }
    }

    fn caused_by(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StepError {
            message: e.to_string(),
            changed_since: false,
            source: Some(Box::new(e)),
        }
    }
}

fn io(what: impl std::fmt::Display, path: &Path, e: impl std::fmt::Display) -> StepError {
    StepError::new(format!("{what} '{}': {e}", show(path)))
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

/// What steps need besides their own parameters.
pub struct Ctx<'a> {
    /// Hand what we create to the home's owner (we run as root for them).
    pub owner: Option<(u32, u32)>,
    pub owner_ids: (u32, u32),
    pub home: &'a Path,
    pub shared_dir: &'a Path,
    pub config_dir: &'a Path,
    pub progress: &'a (dyn Fn(u64, u64) + Sync),
}

/// Persist the journal with the step's current undo record.
pub type Save<'s> = dyn FnMut(&Undo) -> Result<(), StepError> + 's;

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

fn chown(path: &Path, owner: Option<(u32, u32)>) -> Result<(), StepError> {
    if let Some((u, g)) = owner {
        std::os::unix::fs::lchown(path, Some(u), Some(g))
            .map_err(|e| io("cannot give to the home's owner", path, e))?;
    }
    Ok(())
}

fn mkdir(path: &Path, mode: u32, owner: Option<(u32, u32)>) -> Result<(), StepError> {
    match std::fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists && is_real_dir(path) => {}
        Err(e) => return Err(io("cannot create", path, e)),
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| io("cannot chmod", path, e))?;
    chown(path, owner)
}

/// Put a directory's mode, owner and mtime back.
fn restore_meta(path: &Path, m: &Meta, chown_it: bool) -> Result<(), StepError> {
    if chown_it {
        chown(path, Some((m.uid, m.gid)))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(m.mode))
        .map_err(|e| io("cannot chmod", path, e))?;
    set_mtime(path, m.mtime).map_err(|e| io("cannot set the mtime of", path, e))
}

fn staging(to: &Path, suffix: &str) -> PathBuf {
    let mut s: OsString = to.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// A verified copy of the tree `src` at `staging`, from scratch: whatever an interrupted
/// attempt left there is removed first, never trusted.
fn copy_to_staging(src: &Path, staging: &Path, ctx: &Ctx) -> Result<(), StepError> {
    if exists(staging) {
        fsops::remove_tree(staging)?;
    }
    let opts = CopyOptions {
        preserve_owner: ctx.owner.is_some(),
    };
    fsops::copy_tree_verified(src, staging, &opts, ctx.progress)?;
    Ok(())
}

/// rename(2), with an error that names both paths.
fn rename(from: &Path, to: &Path) -> Result<(), StepError> {
    std::fs::rename(from, to).map_err(|e| {
        StepError::new(format!(
            "cannot rename '{}' to '{}': {e}",
            show(from),
            show(to)
        ))
    })
}

pub const INCOMING: &str = ".dci-incoming";
pub const RESTORE: &str = ".dci-restore";

fn hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

fn read_opt(path: &Path) -> Result<Option<Vec<u8>>, StepError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("cannot read", path, e)),
    }
}

/// Apply (or finish applying) one step.
pub fn apply(step: &Step, u: &mut Undo, ctx: &Ctx, save: &mut Save) -> Result<(), StepError> {
    failpoint(&format!("apply-{}", step.id()))?;
    match step {
        Step::CreateSharedDir { dirs } => {
            for d in dirs {
                if !u.created_dirs.contains(d) {
                    if exists(d) {
                        // It appeared since planning and is not ours: leave it be.
                        continue;
                    }
                    u.created_dirs.push(d.clone());
                    u.recorded = true;
                    save(u)?;
                }
                mkdir(d, 0o755, ctx.owner)?;
            }
        }
        Step::CreateConfigDir { path } => {
            if !u.recorded {
                u.recorded = true;
                if !exists(path) {
                    u.created_dirs.push(path.clone());
                }
                save(u)?;
            }
            mkdir(path, 0o700, ctx.owner)?;
        }
        Step::RemoveEmptyClaudeDir { path } => {
            if !u.recorded {
                u.dir_meta = Some(meta_of(path).map_err(|e| io("cannot stat", path, e))?);
                u.recorded = true;
                save(u)?;
            }
            match std::fs::remove_dir(path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io("cannot remove the empty directory", path, e)),
            }
        }
        Step::SecureConfigDir {
            path,
            uid,
            gid,
            chown: do_chown,
        } => {
            if !u.recorded {
                u.dir_meta = Some(meta_of(path).map_err(|e| io("cannot stat", path, e))?);
                u.recorded = true;
                save(u)?;
            }
            if *do_chown {
                chown(path, Some((*uid, *gid)))?;
            }
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| io("cannot chmod 0700", path, e))?;
        }
        Step::MoveConfig {
            from, to, method, ..
        } => move_config(from, to, *method, u, ctx, save)?,
        Step::MoveClaudeJson { from, to, method } => move_json(from, to, *method, u, ctx, save)?,
        Step::LinkClaudeDir { link, target } | Step::LinkClaudeJson { link, target } => {
            if !u.recorded {
                match std::fs::symlink_metadata(link) {
                    Ok(m) if m.file_type().is_symlink() => {
                        let t = std::fs::read_link(link)
                            .map_err(|e| io("cannot read the link", link, e))?;
                        if &t != target {
                            u.prev_link = Some(t);
                            u.file_meta =
                                Some(meta_of(link).map_err(|e| io("cannot stat", link, e))?);
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
                u.recorded = true;
                save(u)?;
            }
            remove_stale_temps(link);
            fsops::atomic_symlink(target, link, ctx.owner)?;
        }
        Step::WriteEnvFile { path } => {
            let entries = [
                ("CLAUDE_SHARED_DIR", ctx.shared_dir),
                ("CLAUDE_CONFIG_DIR", ctx.config_dir),
            ];
            let refs: Vec<(&str, &OsStr)> =
                entries.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
            write_file(path, u, ctx, save, 0o600, &mut |cur| {
                envfile::edit(cur, &refs).map_err(|e| io("cannot edit", path, e))
            })?;
        }
        Step::WriteProfile { path, fish } => {
            let kind = if *fish {
                ShellKind::Fish
            } else {
                ShellKind::Posix
            };
            let block = profile::render_block(kind, ctx.config_dir);
            // fish's conf.d may not exist yet.
            if !u.recorded {
                u.created_dirs = path.parent().map(fsops::missing_dirs).unwrap_or_default();
            }
            for d in u.created_dirs.clone() {
                if !exists(&d) {
                    u.recorded = true;
                    save(u)?;
                    mkdir(&d, 0o755, ctx.owner)?;
                }
            }
            write_file(path, u, ctx, save, 0o644, &mut |cur| {
                Ok(profile::apply_block(cur, &block))
            })?;
        }
        Step::Verify => {}
    }
    failpoint(&format!("applied-{}", step.id()))?;
    Ok(())
}

/// Computes a file's new bytes from its current ones (None: already as wanted).
type Edit<'e> = dyn FnMut(&[u8]) -> Result<Option<Vec<u8>>, StepError> + 'e;

/// Rewrite a small file atomically, keeping its mode and owner, recording its old bytes first.
fn write_file(
    path: &Path,
    u: &mut Undo,
    ctx: &Ctx,
    save: &mut Save,
    new_mode: u32,
    edit: &mut Edit,
) -> Result<(), StepError> {
    remove_stale_temps(path);
    let cur = read_opt(path)?;
    let Some(new) = edit(cur.as_deref().unwrap_or_default())? else {
        if cur.is_some() {
            return Ok(()); // already as wanted (or a resumed step that had finished)
        }
        return Ok(());
    };
    if !u.recorded || u.after_hash.is_none() {
        u.existed = cur.is_some();
        u.prev_bytes = cur.clone();
        u.file_meta = if cur.is_some() {
            Some(meta_of(path).map_err(|e| io("cannot stat", path, e))?)
        } else {
            None
        };
        u.recorded = true;
    }
    u.after_hash = Some(hash(&new));
    save(u)?;
    let (mode, owner) = match &u.file_meta {
        Some(m) => (m.mode, Some((m.uid, m.gid)).filter(|_| ctx.owner.is_some())),
        None => (new_mode, ctx.owner),
    };
    atomic::write_file_atomic(path, &new, mode, owner).map_err(|e| io("cannot write", path, e))
}

fn move_config(
    from: &Path,
    to: &Path,
    method: Method,
    u: &mut Undo,
    ctx: &Ctx,
    save: &mut Save,
) -> Result<(), StepError> {
    if !u.recorded {
        // An empty config dir that was there already is replaced by the move; undo recreates it.
        if is_real_dir(to) {
            u.dir_meta = Some(meta_of(to).map_err(|e| io("cannot stat", to, e))?);
        }
        u.recorded = true;
        save(u)?;
    }
    let from_is_dir = is_real_dir(from);
    match method {
        Method::Rename => {
            if !from_is_dir && is_real_dir(to) {
                return Ok(()); // renamed before a crash
            }
            rename(from, to)?;
            atomic::sync_dir(ctx.home).map_err(|e| io("cannot sync", ctx.home, e))?;
            if let Some(p) = to.parent() {
                atomic::sync_dir(p).map_err(|e| io("cannot sync", p, e))?;
            }
        }
        Method::VerifiedCopy => {
            let incoming = staging(to, INCOMING);
            let phase = u.phase.clone().unwrap_or_default();
            if phase != "copied" && phase != "placed" {
                // (Re)do the copy from scratch: a half-finished copy is never trusted.
                u.phase = Some("copying".into());
                save(u)?;
                copy_to_staging(from, &incoming, ctx)?;
                failpoint("copied-move-config")?;
                u.phase = Some("copied".into());
                save(u)?;
            }
            if u.phase.as_deref() == Some("copied") {
                if exists(&incoming) {
                    rename(&incoming, to)?;
                    if let Some(p) = to.parent() {
                        atomic::sync_dir(p).map_err(|e| io("cannot sync", p, e))?;
                    }
                }
                u.phase = Some("placed".into());
                save(u)?;
            }
            failpoint("placed-move-config")?;
            // The copy is verified and in place: only now may the source go.
            if exists(from) && is_real_dir(from) {
                fsops::remove_tree(from)?;
                atomic::sync_dir(ctx.home).map_err(|e| io("cannot sync", ctx.home, e))?;
            }
        }
    }
    Ok(())
}

fn move_json(
    from: &Path,
    to: &Path,
    method: Method,
    u: &mut Undo,
    ctx: &Ctx,
    save: &mut Save,
) -> Result<(), StepError> {
    let from_is_file = std::fs::symlink_metadata(from)
        .map(|m| m.is_file())
        .unwrap_or(false);
    if !u.recorded {
        if exists(to) {
            return Err(StepError::new(format!(
                "'{}' appeared since planning; it will not be overwritten",
                show(to)
            )));
        }
        u.recorded = true;
        u.phase = Some("copying".into());
        u.parent_mtime = to.parent().and_then(|p| meta_of(p).ok()).map(|m| m.mtime);
        save(u)?;
    }
    if !from_is_file {
        return if exists(to) {
            Ok(())
        } else {
            Err(StepError::new(format!("'{}' has disappeared", show(from))))
        };
    }
    match method {
        Method::Rename => {
            rename(from, to)?;
        }
        Method::VerifiedCopy => {
            if u.phase.as_deref() != Some("copied") {
                if exists(to) {
                    std::fs::remove_file(to)
                        .map_err(|e| io("cannot remove the partial copy", to, e))?;
                }
                fsops::copy_file_verified(
                    from,
                    to,
                    &CopyOptions {
                        preserve_owner: ctx.owner.is_some(),
                    },
                )?;
                u.phase = Some("copied".into());
                save(u)?;
            }
            std::fs::remove_file(from).map_err(|e| io("cannot remove", from, e))?;
        }
    }
    if let Some(p) = to.parent() {
        if let Some(t) = u.parent_mtime {
            set_mtime(p, t).map_err(|e| io("cannot set the mtime of", p, e))?;
        }
        atomic::sync_dir(p).map_err(|e| io("cannot sync", p, e))?;
    }
    atomic::sync_dir(ctx.home).map_err(|e| io("cannot sync", ctx.home, e))
}

/// Check, before anything is undone, that undoing this step will not clobber someone's edit
/// or lose data written since. Read-only.
pub fn precheck_undo(step: &Step, u: &Undo) -> Result<(), StepError> {
    match step {
        Step::WriteEnvFile { path } | Step::WriteProfile { path, .. } => {
            if u.after_hash.is_none() {
                // Never written: the step stopped (or failed) before its atomic write, which
                // only happens after `after_hash` is journaled. Nothing of ours to undo.
                return Ok(());
            }
            let cur = read_opt(path)?;
            let cur_hash = cur.as_deref().map(hash);
            if cur_hash.is_some() && cur_hash == u.after_hash {
                return Ok(());
            }
            if cur == u.prev_bytes {
                return Ok(()); // never written, or already restored
            }
            let mut e = StepError::new(format!(
                "'{}' was changed after the migration wrote it; undo will not overwrite that edit.\n{}",
                show(path),
                diff_hint(u.prev_bytes.as_deref(), cur.as_deref()).trim_end()
            ));
            e.changed_since = true;
            Err(e)
        }
        Step::CreateConfigDir { path } => {
            if is_real_dir(path)
                && std::fs::read_dir(path)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(false)
            {
                let mut e = StepError::new(format!(
                    "the config dir '{}' was created empty by the migration and now holds files (Claude has run since); undo would have to delete them",
                    show(path)
                ));
                e.changed_since = true;
                return Err(e);
            }
            Ok(())
        }
        Step::LinkClaudeDir { link, target } | Step::LinkClaudeJson { link, target } => {
            match std::fs::read_link(link) {
                Ok(t) if &t == target => Ok(()),
                Err(_) if !exists(link) => Ok(()),
                Ok(t) if Some(&t) == u.prev_link.as_ref() => Ok(()),
                _ => {
                    let mut e = StepError::new(format!(
                        "'{}' is no longer the link to '{}' that the migration made; undo will not replace it",
                        show(link),
                        show(target)
                    ));
                    e.changed_since = true;
                    Err(e)
                }
            }
        }
        _ => Ok(()),
    }
}

/// A short unified-style difference of two small text files, for the refusal message.
pub fn diff_hint(before: Option<&[u8]>, now: Option<&[u8]>) -> String {
    let lines = |b: Option<&[u8]>| -> Vec<String> {
        b.map(|b| {
            String::from_utf8_lossy(b)
                .lines()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
    };
    let (a, b) = (lines(before), lines(now));
    let mut out =
        String::from("  difference from what was there before the migration (- before, + now):\n");
    let mut shown = 0;
    for l in a.iter().filter(|l| !b.contains(l)) {
        out.push_str(&format!("  - {l}\n"));
        shown += 1;
    }
    for l in b.iter().filter(|l| !a.contains(l)) {
        out.push_str(&format!("  + {l}\n"));
        shown += 1;
    }
    if shown == 0 {
        out.push_str("  (whitespace or line endings only)\n");
    }
    out
}

/// Undo (or finish undoing) one step that was started or done.
pub fn undo(step: &Step, u: &mut Undo, ctx: &Ctx, save: &mut Save) -> Result<(), StepError> {
    failpoint(&format!("undo-{}", step.id()))?;
    match step {
        Step::CreateSharedDir { .. } | Step::CreateConfigDir { .. } => {
            for d in u.created_dirs.iter().rev() {
                match std::fs::remove_dir(d) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(io(
                            "cannot remove the directory the migration created",
                            d,
                            e,
                        ))
                    }
                }
            }
        }
        Step::RemoveEmptyClaudeDir { path } => {
            if let Some(m) = &u.dir_meta {
                if !exists(path) {
                    mkdir(path, m.mode, None)?;
                }
                restore_meta(path, m, ctx.owner.is_some())?;
            }
        }
        Step::SecureConfigDir { path, .. } => {
            if let (Some(m), true) = (&u.dir_meta, is_real_dir(path)) {
                if ctx.owner.is_some() {
                    chown(path, Some((m.uid, m.gid)))?;
                }
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(m.mode))
                    .map_err(|e| io("cannot chmod", path, e))?;
            }
        }
        Step::MoveConfig {
            from, to, method, ..
        } => undo_move_config(from, to, *method, u, ctx, save)?,
        Step::MoveClaudeJson { from, to, method } => {
            let from_is_file = std::fs::symlink_metadata(from)
                .map(|m| m.is_file())
                .unwrap_or(false);
            if from_is_file {
                // The source is still there (the move had not finished): drop any copy.
                if exists(to) && *method == Method::VerifiedCopy {
                    std::fs::remove_file(to).map_err(|e| io("cannot remove", to, e))?;
                }
            } else if exists(to) {
                if exists(from) {
                    return Err(StepError::new(format!(
                        "'{}' is in the way of restoring it",
                        show(from)
                    )));
                }
                match method {
                    Method::Rename => rename(to, from)?,
                    Method::VerifiedCopy => {
                        let tmp = staging(from, RESTORE);
                        if exists(&tmp) {
                            std::fs::remove_file(&tmp).map_err(|e| io("cannot remove", &tmp, e))?;
                        }
                        fsops::copy_file_verified(
                            to,
                            &tmp,
                            &CopyOptions {
                                preserve_owner: ctx.owner.is_some(),
                            },
                        )?;
                        std::fs::rename(&tmp, from).map_err(|e| io("cannot restore", from, e))?;
                        std::fs::remove_file(to).map_err(|e| io("cannot remove", to, e))?;
                    }
                }
            }
            if let (Some(p), Some(t)) = (to.parent(), u.parent_mtime) {
                if is_real_dir(p) {
                    set_mtime(p, t).map_err(|e| io("cannot set the mtime of", p, e))?;
                }
            }
            atomic::sync_dir(ctx.home).map_err(|e| io("cannot sync", ctx.home, e))?;
        }
        Step::LinkClaudeDir { link, target } | Step::LinkClaudeJson { link, target } => {
            remove_stale_temps(link);
            match std::fs::read_link(link) {
                Ok(t) if &t == target => {
                    if let Some(prev) = &u.prev_link {
                        let owner = u
                            .file_meta
                            .map(|m| (m.uid, m.gid))
                            .filter(|_| ctx.owner.is_some());
                        fsops::atomic_symlink(prev, link, owner)?;
                    } else {
                        std::fs::remove_file(link)
                            .map_err(|e| io("cannot remove the link", link, e))?;
                    }
                }
                _ => {
                    if let (Some(prev), false) = (&u.prev_link, exists(link)) {
                        let owner = u
                            .file_meta
                            .map(|m| (m.uid, m.gid))
                            .filter(|_| ctx.owner.is_some());
                        fsops::atomic_symlink(prev, link, owner)?;
                    }
                }
            }
            if let (Some(m), Some(_)) = (&u.file_meta, &u.prev_link) {
                let _ = set_mtime(link, m.mtime);
            }
        }
        Step::WriteEnvFile { path } | Step::WriteProfile { path, .. } => {
            if !u.superseded {
                precheck_undo(step, u)?;
            }
            remove_stale_temps(path);
            let cur = read_opt(path)?;
            if u.after_hash.is_none() {
                // Never written (see `precheck_undo`): leave the file alone.
            } else if cur != u.prev_bytes {
                match (&u.prev_bytes, &u.file_meta) {
                    (Some(b), Some(m)) => {
                        let owner = Some((m.uid, m.gid)).filter(|_| ctx.owner.is_some());
                        atomic::write_file_atomic(path, b, m.mode, owner)
                            .map_err(|e| io("cannot restore", path, e))?;
                        set_mtime(path, m.mtime)
                            .map_err(|e| io("cannot set the mtime of", path, e))?;
                    }
                    _ => match std::fs::remove_file(path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == ErrorKind::NotFound => {}
                        Err(e) => return Err(io("cannot remove", path, e)),
                    },
                }
            } else if let Some(m) = &u.file_meta {
                let _ = set_mtime(path, m.mtime);
            }
            for d in u.created_dirs.iter().rev() {
                let _ = std::fs::remove_dir(d);
            }
        }
        Step::Verify => {}
    }
    Ok(())
}

fn undo_move_config(
    from: &Path,
    to: &Path,
    method: Method,
    u: &mut Undo,
    ctx: &Ctx,
    save: &mut Save,
) -> Result<(), StepError> {
    let recreate_empty = |u: &Undo| -> Result<(), StepError> {
        if let Some(m) = &u.dir_meta {
            if !exists(to) {
                mkdir(to, m.mode, None)?;
            }
            restore_meta(to, m, ctx.owner.is_some())?;
        }
        Ok(())
    };
    let from_is_dir = is_real_dir(from);
    match method {
        Method::Rename => {
            if !from_is_dir {
                if exists(from) {
                    return Err(StepError::new(format!(
                        "'{}' is in the way of moving the config back",
                        show(from)
                    )));
                }
                if is_real_dir(to) {
                    rename(to, from)?;
                    atomic::sync_dir(ctx.home).map_err(|e| io("cannot sync", ctx.home, e))?;
                }
            }
            recreate_empty(u)?;
        }
        Method::VerifiedCopy => {
            let incoming = staging(to, INCOMING);
            let placed = u.phase.as_deref() == Some("placed");
            if !placed {
                // The source was never touched: drop the copy (staged, or already renamed
                // into place if the crash came between the rename and the journal write).
                if exists(&incoming) {
                    fsops::remove_tree(&incoming)?;
                }
                let to_nonempty = std::fs::read_dir(to)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(false);
                if u.phase.as_deref() == Some("copied")
                    && from_is_dir
                    && is_real_dir(to)
                    && to_nonempty
                {
                    fsops::remove_tree(to)?;
                }
            } else {
                let restore = staging(from, RESTORE);
                if u.undo_phase.as_deref() != Some("restored") {
                    if is_real_dir(to) {
                        u.undo_phase = Some("copying-back".into());
                        save(u)?;
                        copy_to_staging(to, &restore, ctx)?;
                        // Leftovers of an interrupted source removal are duplicates of what
                        // the verified copy holds.
                        if exists(from) {
                            if !from_is_dir {
                                return Err(StepError::new(format!(
                                    "'{}' is in the way of moving the config back",
                                    show(from)
                                )));
                            }
                            fsops::remove_tree(from)?;
                        }
                        std::fs::rename(&restore, from)
                            .map_err(|e| io("cannot restore", from, e))?;
                        atomic::sync_dir(ctx.home).map_err(|e| io("cannot sync", ctx.home, e))?;
                    }
                    u.undo_phase = Some("restored".into());
                    save(u)?;
                }
                if is_real_dir(to) {
                    fsops::remove_tree(to)?;
                }
            }
            recreate_empty(u)?;
        }
    }
    Ok(())
}
