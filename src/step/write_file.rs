//! `write-env-file` and `write-profile`: a small file rewritten atomically (the factory's `.env`
//! gets `CLAUDE_SHARED_DIR` and `CLAUDE_CONFIG_DIR`; the login shell's rc file gets the export
//! block), keeping its mode and owner. The record keeps the old bytes and metadata and the hash
//! of what was written, so undo puts the file back and refuses to clobber an edit made since.

use super::{
    exists, hash, io, mkdir, remove_created_dirs, Ctx, Meta, Record, Res, Save, StepError,
    StepKind, Wire,
};
use crate::atomic::remove_stale_temps;
use crate::envfile;
use crate::fsops::{self, nearest_existing};
use crate::pathser::{self, show};
use crate::profile::{self, ShellKind};
use crate::safefs::{resolve_links, Target};
use serde::{Deserialize, Serialize};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// This family's undo record.
type R = WriteRecord;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteEnvFile {
    #[serde(with = "pathser::path")]
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteProfile {
    #[serde(with = "pathser::path")]
    pub path: PathBuf,
    pub fish: bool,
}

/// What undoing a file write needs. Each field is set once (a resumed step must not overwrite
/// what the first attempt saw).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteRecord {
    pub recorded: bool,
    /// Directories created for the file (fish's `conf.d`), outermost first.
    pub created_dirs: Vec<PathBuf>,
    /// Whether the file existed before, with its bytes and metadata.
    pub existed: bool,
    pub prev_bytes: Option<Vec<u8>>,
    pub file_meta: Option<Meta>,
    /// blake3 of the bytes the step wrote: undo refuses to clobber a file edited since.
    pub after_hash: Option<String>,
    /// A later run rewrote the same file: undoing that run puts back the bytes this one wrote
    /// (or an edit made in between, which the later run took over), so this entry's "changed
    /// since" check does not apply; its job is only to restore the original.
    pub superseded: bool,
}

impl Record for WriteRecord {
    fn from_wire(w: &Wire) -> Result<Self, StepError> {
        Ok(WriteRecord {
            recorded: w.recorded,
            created_dirs: w.created_dirs.clone(),
            existed: w.existed,
            prev_bytes: w.prev_bytes.clone(),
            file_meta: w.file_meta,
            after_hash: w.after_hash.clone(),
            superseded: w.superseded,
        })
    }
    fn to_wire(&self) -> Wire {
        Wire {
            recorded: self.recorded,
            created_dirs: self.created_dirs.clone(),
            existed: self.existed,
            prev_bytes: self.prev_bytes.clone(),
            file_meta: self.file_meta,
            after_hash: self.after_hash.clone(),
            superseded: self.superseded,
            ..Wire::default()
        }
    }
}

/// Computes a file's new bytes from its current ones (None: already as wanted).
type Edit<'e> = dyn FnMut(&[u8]) -> Result<Option<Vec<u8>>, StepError> + 'e;

/// The file an env or rc step edits: `path` through its symlinks (issue 10, guarantee 4), after
/// checking, now, that it is a file the home's owner decides (for the env file, `root_may_own`:
/// or root's reached only through root's directories). The link itself is never replaced.
fn edited_target(path: &Path, root_may_own: bool, ctx: &Ctx) -> Result<Target, StepError> {
    let (what, flag) = if root_may_own {
        ("env file", "--env-file")
    } else {
        ("profile", "--profile")
    };
    let owner_uid = ctx
        .owner
        .map(|(u, _)| u)
        .unwrap_or_else(|| nix::unistd::geteuid().as_raw());
    crate::settings::check_file_authority(what, flag, path, owner_uid, root_may_own)
        .map_err(|e| StepError::new(e.to_string()))?;
    Target::resolve(path).map_err(|e| io("cannot open the directory of", path, e))
}

/// An edited file's current bytes and metadata (bounded; a fifo or device refused).
fn read_target(tg: &Target) -> Result<Option<(Vec<u8>, Meta)>, StepError> {
    let r = tg
        .read(crate::settings::MAX_EDITABLE_FILE)
        .map_err(|e| io("cannot read", &tg.path(), e))?;
    Ok(r.map(|(b, st)| {
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
        let m = Meta {
            mode: (st.st_mode & 0o7777) as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            mtime: (st.st_mtime as i64, st.st_mtime_nsec as i64),
        };
        (b, m)
    }))
}

/// The current bytes of `path`, through its links, for the undo check (read only).
fn read_through(path: &Path) -> Result<Option<Vec<u8>>, StepError> {
    let tg = Target::resolve(path).map_err(|e| io("cannot open the directory of", path, e))?;
    Ok(read_target(&tg)?.map(|(b, _)| b))
}

/// Rewrite a small file atomically, keeping its mode and owner, recording its old bytes first.
/// A symlinked file (GNU stow, chezmoi, yadm) is edited through its link: the target, in its
/// own directory, gets the new bytes with its own mode and owner, and the link stays.
#[allow(clippy::too_many_arguments)]
fn write_file(
    path: &Path,
    root_may_own: bool,
    u: &mut WriteRecord,
    ctx: &Ctx,
    save: &mut Save<WriteRecord>,
    new_mode: u32,
    edit: &mut Edit,
) -> Result<(), StepError> {
    let tg = edited_target(path, root_may_own, ctx)?;
    remove_stale_temps(&tg.path());
    let cur = read_target(&tg)?;
    let Some(new) = edit(cur.as_ref().map(|(b, _)| &b[..]).unwrap_or_default())? else {
        return Ok(()); // already as wanted (or a resumed step that had finished)
    };
    if !u.recorded || u.after_hash.is_none() {
        u.existed = cur.is_some();
        u.prev_bytes = cur.as_ref().map(|(b, _)| b.clone());
        u.file_meta = cur.as_ref().map(|(_, m)| *m);
        u.recorded = true;
    }
    u.after_hash = Some(hash(&new));
    save(u)?;
    let (mode, owner) = match &u.file_meta {
        Some(m) => (m.mode, Some((m.uid, m.gid)).filter(|_| ctx.owner.is_some())),
        None => (new_mode, ctx.owner),
    };
    tg.write(&new, mode, owner)
        .map_err(|e| io("cannot write", &tg.path(), e))
}

/// Undo a file write: put the old bytes (or no file) back, through the link as it was
/// written (the target gets its bytes back, the link stays), unless superseded-checks refuse.
fn undo_write(
    path: &Path,
    root_may_own: bool,
    u: &WriteRecord,
    ctx: &Ctx,
) -> Result<(), StepError> {
    if !u.superseded {
        precheck(path, root_may_own, u)?;
    }
    let tg = edited_target(path, root_may_own, ctx)?;
    remove_stale_temps(&tg.path());
    let cur = read_target(&tg)?.map(|(b, _)| b);
    if u.after_hash.is_none() {
        // Never written (see `precheck`): leave the file alone.
    } else if cur != u.prev_bytes {
        match (&u.prev_bytes, &u.file_meta) {
            (Some(b), Some(m)) => {
                let owner = Some((m.uid, m.gid)).filter(|_| ctx.owner.is_some());
                tg.write(b, m.mode, owner)
                    .map_err(|e| io("cannot restore", &tg.path(), e))?;
                tg.dir
                    .set_mtime_at(&tg.name, m.mtime)
                    .map_err(|e| io("cannot set the mtime of", &tg.path(), e))?;
                tg.dir
                    .sync_at(&tg.name)
                    .map_err(|e| io("cannot sync", &tg.path(), e))?;
            }
            _ => {
                tg.dir
                    .unlink(&tg.name)
                    .map_err(|e| io("cannot remove", &tg.path(), e))?;
                tg.dir
                    .sync()
                    .map_err(|e| io("cannot sync", tg.dir.path(), e))?;
            }
        }
    } else if let Some(m) = &u.file_meta {
        let _ = tg.dir.set_mtime_at(&tg.name, m.mtime);
        let _ = tg.dir.sync_at(&tg.name);
    }
    // Best effort, as before: one that holds files now stays. Never through a link on the way.
    remove_created_dirs(ctx.home, &u.created_dirs, true)
}

/// Refuse to undo a write when the file was edited since.
/// For the env file (`secret`), the difference shows keys, and only the tool's own values: the
/// other values may be tokens, and stderr goes to logs (issue 10, guarantee 2).
fn precheck(path: &Path, secret: bool, u: &WriteRecord) -> Result<(), StepError> {
    if u.after_hash.is_none() {
        // Never written: the step stopped (or failed) before its atomic write, which only
        // happens after `after_hash` is journaled. Nothing of ours to undo.
        return Ok(());
    }
    let cur = read_through(path)?;
    let cur_hash = cur.as_deref().map(hash);
    if cur_hash.is_some() && cur_hash == u.after_hash {
        return Ok(());
    }
    if cur == u.prev_bytes {
        return Ok(()); // never written, or already restored
    }
    Err(StepError::new(format!(
        "'{}' was changed after the migration wrote it; undo will not overwrite that edit.\n{}",
        show(path),
        diff_hint(u.prev_bytes.as_deref(), cur.as_deref(), secret).trim_end()
    )))
}

/// `KEY=value` with the value hidden, unless the key is one the tool writes.
fn redact(line: &str) -> String {
    let body = line.trim_start();
    let body = body.strip_prefix("export ").unwrap_or(body);
    match body.split_once('=') {
        Some((k, _)) if matches!(k.trim(), "CLAUDE_SHARED_DIR" | "CLAUDE_CONFIG_DIR") => {
            line.to_string()
        }
        Some((k, _)) if !line.trim_start().starts_with('#') => {
            format!(
                "{}=(value not shown)",
                &line[..line.len() - body.len() + k.len()]
            )
        }
        _ if line.trim_start().starts_with('#') || line.trim().is_empty() => line.to_string(),
        _ => "(a line not shown)".to_string(),
    }
}

/// The lines of `a` not in `b`, and those of `b` not in `a`, each mapped by `line`.
pub(crate) fn changed_lines(
    a: &[String],
    b: &[String],
    line: fn(char, &str) -> String,
) -> Vec<String> {
    let mut out: Vec<String> = a
        .iter()
        .filter(|l| !b.contains(l))
        .map(|l| line('-', l))
        .collect();
    out.extend(b.iter().filter(|l| !a.contains(l)).map(|l| line('+', l)));
    out
}

/// A short unified-style difference of two small text files, for the refusal message.
fn diff_hint(before: Option<&[u8]>, now: Option<&[u8]>, secret: bool) -> String {
    let lines = |b: Option<&[u8]>| -> Vec<String> {
        b.map(|b| {
            String::from_utf8_lossy(b)
                .lines()
                .map(|l| if secret { redact(l) } else { l.to_owned() })
                .collect()
        })
        .unwrap_or_default()
    };
    let mut out =
        String::from("  difference from what was there before the migration (- before, + now):\n");
    let changed = changed_lines(&lines(before), &lines(now), |c, l| format!("  {c} {l}\n"));
    if changed.is_empty() {
        out.push_str("  (whitespace or line endings only)\n");
    }
    out.extend(changed);
    out
}

/// What both file steps do alike, given their `path`: undo, its check, the directories.
macro_rules! file_write_methods {
    ($root_may_own:literal) => {
        fn undo(&self, u: &mut R, ctx: &Ctx, _: &mut Save<R>) -> Res {
            undo_write(&self.path, $root_may_own, u, ctx)
        }
        fn precheck_undo(&self, u: &R) -> Res {
            precheck(&self.path, $root_may_own, u)
        }
        fn touched_dir(&self) -> Option<PathBuf> {
            touched_dir(&self.path)
        }
        fn write_need(&self) -> Option<(PathBuf, &'static str)> {
            write_need(&self.path)
        }
        fn written_file(&self) -> Option<&Path> {
            Some(&self.path)
        }
    };
}

fn write_need(path: &Path) -> Option<(PathBuf, &'static str)> {
    Some((touched_dir(path)?, "rewrite the file atomically"))
}

/// The directory the file is written in: its symlink's target's, when it is a link.
fn touched_dir(path: &Path) -> Option<PathBuf> {
    match resolve_links(path) {
        Ok((dir, _)) => Some(dir),
        Err(_) => Some(nearest_existing(path.parent().unwrap_or(path))),
    }
}

impl StepKind for WriteEnvFile {
    type Record = R;

    fn summary(&self) -> String {
        format!(
            "set CLAUDE_SHARED_DIR and CLAUDE_CONFIG_DIR in {}",
            show(&self.path)
        )
    }

    fn apply(&self, u: &mut R, ctx: &Ctx, save: &mut Save<R>) -> Res {
        let path = &self.path;
        let entries = [
            ("CLAUDE_SHARED_DIR", ctx.shared_dir),
            ("CLAUDE_CONFIG_DIR", ctx.config_dir),
        ];
        let refs: Vec<(&str, &OsStr)> = entries.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
        write_file(path, true, u, ctx, save, 0o600, &mut |cur| {
            envfile::edit(cur, &refs).map_err(|e| io("cannot edit", path, e))
        })
    }

    file_write_methods!(true);
}

impl StepKind for WriteProfile {
    type Record = R;

    fn summary(&self) -> String {
        format!(
            "add the CLAUDE_CONFIG_DIR export block to {}",
            show(&self.path)
        )
    }

    fn apply(&self, u: &mut R, ctx: &Ctx, save: &mut Save<R>) -> Res {
        let path = &self.path;
        let kind = if self.fish {
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
        write_file(path, false, u, ctx, save, 0o644, &mut |cur| {
            Ok(profile::apply_block(cur, &block))
        })
    }

    file_write_methods!(false);
}

#[cfg(test)]
mod redact_tests {
    use super::redact;

    #[test]
    fn env_values_are_hidden_but_the_tool_s_own_and_comments() {
        assert_eq!(redact("API_KEY=sk-123"), "API_KEY=(value not shown)");
        assert_eq!(
            redact("export FORGE_TOKEN=\"abc\""),
            "export FORGE_TOKEN=(value not shown)"
        );
        assert_eq!(redact("CLAUDE_CONFIG_DIR=/x"), "CLAUDE_CONFIG_DIR=/x");
        assert_eq!(redact("# a comment=1"), "# a comment=1");
        assert_eq!(redact("garbage"), "(a line not shown)");
    }
}
