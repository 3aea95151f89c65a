//! The write-ahead journal: what a run is about to do, what it did, and what undoes it.
//!
//! Lives under the home owner's `$XDG_STATE_HOME/disinto/claude-init/journal.json` (mode 0600 in
//! a 0700 directory, owned by the home's owner) — never in the shared dir, which every container
//! mounts, because it may hold a copy of the `.env` and its secrets. Every write is atomic
//! (temp file, fsync, rename, fsync the directory), so after a kill -9 or a power cut the journal
//! is either the old or the new version, never a torn one.
//!
//! Protocol (rustup's transaction, made durable): before a step changes anything its entry is
//! saved as `started` together with the data its undo needs; after, as `done`. A crash therefore
//! leaves at most one `started` entry, and that step's apply and undo both know how to finish a
//! half-done change.
//!
//! The very first journal of a home appears together with its state directories (built under
//! a temporary name, then one rename; failpoint `journal-staged` sits just before it), so
//! there is never a state directory of ours without a journal saying so.

use crate::atomic;
use crate::pathser;
use crate::settings::Settings;
use crate::step::{Step, Wire};
use serde::{Deserialize, Serialize};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

pub const JOURNAL_FILE: &str = "journal.json";
const VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Planned,
    Started,
    Done,
    Undone,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Which run added it: later runs append (a migrated box whose env file is fixed later),
    /// and `undo` reverses all runs, newest first.
    pub run: u32,
    pub step: Step,
    pub state: State,
    #[serde(default)]
    pub undo: Wire,
}

/// A directory whose mtime the tool will disturb (by adding or removing an entry), recorded
/// before the first change so a full undo or rollback puts it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirTime {
    #[serde(with = "pathser::path")]
    pub path: PathBuf,
    pub mtime: (i64, i64),
}

/// The settings a run acted on, recorded once in the journal: a resumed or undone run acts
/// on these paths, not on what the command line or the environment say now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    #[serde(with = "pathser::path")]
    pub home: PathBuf,
    #[serde(with = "pathser::path")]
    pub shared_dir: PathBuf,
    #[serde(with = "pathser::path")]
    pub config_dir: PathBuf,
    #[serde(with = "pathser::opt_path")]
    pub env_file: Option<PathBuf>,
    #[serde(with = "pathser::opt_path")]
    pub profile: Option<PathBuf>,
    pub owner_uid: u32,
    pub owner_gid: u32,
}

impl Recorded {
    pub fn of(s: &Settings) -> Recorded {
        Recorded {
            home: s.home.clone(),
            shared_dir: s.shared_dir.clone(),
            config_dir: s.config_dir.clone(),
            env_file: s.env_file.clone(),
            profile: s.profile.clone(),
            owner_uid: s.owner.uid,
            owner_gid: s.owner.gid,
        }
    }

    /// `s` with the recorded paths and owner in place of its own.
    pub fn settings(&self, s: &Settings) -> Settings {
        let mut s2 = s.clone();
        s2.home = self.home.clone();
        s2.shared_dir = self.shared_dir.clone();
        s2.config_dir = self.config_dir.clone();
        s2.env_file = self.env_file.clone();
        s2.profile = self.profile.clone();
        s2.env_file_note = "as recorded in the journal".into();
        s2.owner.uid = self.owner_uid;
        s2.owner.gid = self.owner_gid;
        s2
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub version: u32,
    pub tool_version: String,
    /// In the JSON these are top-level fields, as they always were.
    #[serde(flatten)]
    pub recorded: Recorded,
    /// The state directories created to hold this journal, outermost first: removed with it.
    #[serde(with = "pathser::paths")]
    pub created_state_dirs: Vec<PathBuf>,
    pub dir_times: Vec<DirTime>,
    /// An `undo` is in progress (or was interrupted).
    pub undoing: bool,
    pub entries: Vec<Entry>,
}

impl Journal {
    pub fn new(s: &Settings) -> Journal {
        Journal {
            version: VERSION,
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            recorded: Recorded::of(s),
            created_state_dirs: Vec::new(),
            dir_times: Vec::new(),
            undoing: false,
            entries: Vec::new(),
        }
    }

    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(JOURNAL_FILE)
    }

    pub fn save(&self, state_dir: &Path, owner: Option<(u32, u32)>) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        // The journal stays its writer's (root's, for a root run): the home's owner must not be
        // able to rewrite what root will act on, nor read previous bytes of root's files
        // (issue 10 findings 1, 7). And it is written through the state dir opened from the
        // home without following a link on the way, so a state dir swapped for a link cannot
        // send it elsewhere.
        let _ = owner;
        match state_dir.strip_prefix(&self.recorded.home) {
            Ok(rel) => crate::safefs::Dir::open(&self.recorded.home)?
                .walk(rel)?
                .write_atomic(std::ffi::OsStr::new(JOURNAL_FILE), &bytes, 0o600, None),
            // `$XDG_STATE_HOME` of a user's own run: theirs, by its path.
            Err(_) => atomic::write_file_atomic(&Self::path(state_dir), &bytes, 0o600, None),
        }
    }

    /// Whether a run or an undo stopped half way.
    pub fn interrupted(&self) -> bool {
        self.undoing
            || self
                .entries
                .iter()
                .any(|e| matches!(e.state, State::Planned | State::Started))
    }

    /// The entry a crash stopped in (or the next one to run). For an interrupted undo, which
    /// goes newest first: the next entry it has to undo.
    pub fn stopped_at(&self) -> Option<&Entry> {
        if self.undoing {
            return self
                .entries
                .iter()
                .rev()
                .find(|e| matches!(e.state, State::Started | State::Done));
        }
        self.entries
            .iter()
            .find(|e| e.state == State::Started)
            .or_else(|| self.entries.iter().find(|e| e.state == State::Planned))
    }

    pub fn next_run(&self) -> u32 {
        self.entries
            .iter()
            .map(|e| e.run)
            .max()
            .map_or(1, |r| r + 1)
    }
}

/// `dir` opened from `home`, component by component without following a link, when it is
/// inside the home (whose owner controls every directory there); else by its path
/// (`$XDG_STATE_HOME` of a user's own run, which is theirs).
fn open_below_home(home: &Path, dir: &Path) -> std::io::Result<crate::safefs::Dir> {
    crate::safefs::open_beneath(home, dir)
}

const STAGING_TAG: &str = ".dci-state-";

/// The largest staged journal read back by [`clear_stale_staging`] (as trust.rs's bound).
const MAX_STAGED_JOURNAL: u64 = 64 << 20;

/// `<parent>/.<name>.dci-state-<pid>[@<sec>.<nsec>]`: where the missing state directories are
/// built, with the first journal inside, before one rename puts them in place; and where they go,
/// journal and all, when an undo removes them. The optional suffix is the mtime the parent had
/// before the tool disturbed it: recorded in the same system call that disturbs it, so that a
/// kill at any later instant leaves the value to put back.
fn staging_for(top: &Path, pid: u32, parent_mtime: Option<(i64, i64)>) -> Option<PathBuf> {
    let parent = top.parent()?;
    let mut name = std::ffi::OsString::from(".");
    name.push(top.file_name()?);
    name.push(format!("{STAGING_TAG}{pid}"));
    if let Some((sec, nsec)) = parent_mtime {
        name.push(format!("@{sec}.{nsec}"));
    }
    Some(parent.join(name))
}

/// The pid and parent mtime in a staging directory's name, if `name` is one for `top_name`.
fn parse_staging(name: &[u8], top_name: &[u8]) -> Option<(i32, Option<(i64, i64)>)> {
    let mut prefix = b".".to_vec();
    prefix.extend_from_slice(top_name);
    prefix.extend_from_slice(STAGING_TAG.as_bytes());
    let rest = std::str::from_utf8(name.strip_prefix(&prefix[..])?).ok()?;
    let (pid, time) = match rest.split_once('@') {
        Some((p, t)) => (p, Some(t)),
        None => (rest, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if !digits(pid) {
        return None;
    }
    let mtime = match time {
        None => None,
        Some(t) => {
            let (a, b) = t.split_once('.')?;
            let sec = a.parse::<i64>().ok()?;
            if !digits(b) {
                return None;
            }
            Some((sec, b.parse::<i64>().ok()?))
        }
    };
    Some((pid.parse().ok()?, mtime))
}

/// Create the journal's missing directories and write `journal` into them as one atomic
/// change: the directories are built under a temporary name next to the outermost missing one
/// (mode 0700, owned by the home's owner), the journal written inside, and a single rename
/// makes both appear. A SIGKILL therefore leaves either no state directory or one holding a
/// journal — never state directories without the journal that says they are ours (the only
/// possible leftover is the staging directory, which [`clear_stale_staging`] recognises).
/// Sets `journal.created_state_dirs`.
pub fn create_with_journal(
    state_dir: &Path,
    owner: Option<(u32, u32)>,
    journal: &mut Journal,
) -> std::io::Result<()> {
    match stage_journal(state_dir, owner, journal)? {
        Some(staged) => staged.commit(),
        None => journal.save(state_dir, owner),
    }
}

/// A first journal built in its staging directory (every directory and the journal synced), not
/// yet renamed into place: [`Staged::commit`] makes it the journal with one rename and one fsync,
/// [`Staged::discard`] removes it and puts the parent's mtime back. `--wait` stages before it
/// takes the agents' lock, so that under the lock only the rename is left. Killed in between,
/// the staging directory is what [`clear_stale_staging`] removes.
pub struct Staged {
    base: crate::safefs::Dir,
    staging_name: std::ffi::OsString,
    top: PathBuf,
    parent_mtime: Option<(i64, i64)>,
}

impl Staged {
    /// Rename the staging directory into place (refused if the name appeared meanwhile) and
    /// sync the parent. On failure the staging directory is removed.
    pub fn commit(self) -> std::io::Result<()> {
        let top_name = self
            .top
            .file_name()
            .ok_or_else(|| std::io::Error::other("the state directory has no parent"))?;
        let res = (|| {
            // rename(2) onto a name that appeared meanwhile fails (EEXIST/ENOTEMPTY for a
            // non-empty directory, and we check for an empty one): never merge into it.
            if self.base.lstat(top_name)?.is_some() {
                return Err(std::io::Error::new(
                    ErrorKind::AlreadyExists,
                    format!("{} appeared meanwhile", self.top.display()),
                ));
            }
            self.base
                .rename_to(&self.staging_name, &self.base, top_name)?;
            self.base.sync()
        })();
        if res.is_err() {
            self.discard_ref();
        }
        res
    }

    /// Remove the staging directory (nothing else was changed) and put the parent's mtime back.
    pub fn discard(self) {
        self.discard_ref();
    }

    fn discard_ref(&self) {
        if self.base.remove_tree_at(&self.staging_name).is_ok() {
            if let Some(t) = self.parent_mtime {
                let _ = self.base.set_mtime(t);
            }
        }
    }
}

/// Build the first journal in a staging directory (see [`create_with_journal`]), up to the
/// rename. `None` when the state directory exists already: there is nothing to stage, the
/// journal is simply saved. Sets `journal.created_state_dirs`.
pub fn stage_journal(
    state_dir: &Path,
    owner: Option<(u32, u32)>,
    journal: &mut Journal,
) -> std::io::Result<Option<Staged>> {
    use std::ffi::OsStr;
    let missing = crate::fsops::missing_dirs(state_dir);
    journal.created_state_dirs = missing.clone();
    let Some(top) = missing.first() else {
        return Ok(None);
    };
    let Some(parent) = top.parent() else {
        return Err(std::io::Error::other("the state directory has no parent"));
    };
    // The directory the state dirs appear in, opened without following a link below the home
    // (`~/.local/state` a link into root's tree is refused here, not written through).
    let base = open_below_home(&journal.recorded.home, parent)?;
    let st = base.stat()?;
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    let parent_mtime = Some((st.st_mtime as i64, st.st_mtime_nsec as i64));
    let staging = staging_for(top, std::process::id(), parent_mtime)
        .ok_or_else(|| std::io::Error::other("the state directory has no parent"))?;
    let staging_name = staging
        .file_name()
        .ok_or_else(|| std::io::Error::other("the state directory has no parent"))?
        .to_os_string();
    if base.lstat(&staging_name)?.is_some() {
        base.remove_tree_at(&staging_name)?; // ours (same pid), from a run that died
    }
    let build = || -> std::io::Result<()> {
        crate::failpoint::hook("state-dir");
        let inner_rel = state_dir.strip_prefix(top).map_err(std::io::Error::other)?;
        let rel = Path::new(&staging_name).join(inner_rel);
        // Every directory created 0700 through its own descriptor, given to the home's owner.
        let (inner, _) = base.walk_create(&rel, 0o700, owner)?;
        let bytes = serde_json::to_vec_pretty(&*journal).map_err(std::io::Error::other)?;
        inner.write_atomic(OsStr::new(JOURNAL_FILE), &bytes, 0o600, None)?;
        // The chain of directories (their entries, modes and owners) reaches the disk before
        // the rename makes it the journal's: a power cut cannot keep the rename and lose them.
        // Each synced through its descriptor, reached from `base` without following a link.
        let mut d = base.sub(&staging_name)?;
        d.sync()?;
        for c in inner_rel.components() {
            d = d.sub(c.as_os_str())?;
            d.sync()?;
        }
        crate::failpoint::failpoint("journal-staged")?;
        Ok(())
    };
    if let Err(e) = build() {
        let _ = base.remove_tree_at(&staging_name);
        return Err(e);
    }
    Ok(Some(Staged {
        base,
        staging_name,
        top: top.clone(),
        parent_mtime,
    }))
}

/// Remove the staging directory of a run that was killed before its first journal was in
/// place, or of an `undo` killed while it removed the state directories (see
/// [`create_with_journal`], [`finish`]), and put back the mtimes that journal recorded (every
/// one: such a run changed nothing else, or had undone everything), then the parent's, from the
/// staging directory's name. Only staging directories of processes that are gone are touched.
/// Returns whether one was removed.
pub fn clear_stale_staging(home: &Path, state_dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let marked = finish_marked_mtime(home, state_dir);
    let missing = crate::fsops::missing_dirs(state_dir);
    let Some(top) = missing.first() else {
        return false;
    };
    let (Some(parent), Some(top_name)) = (top.parent(), top.file_name()) else {
        return false;
    };
    // The parent opened from the home without following a link (issue 10): everything below
    // is done through its descriptor.
    let Ok(base) = open_below_home(home, parent) else {
        return marked;
    };
    // A staging name is input: the home's owner can plant one (any pid, any time after the
    // `@`), or rename one of their directories to it. So root does with it only what that
    // owner could do themselves: it removes the tree only where every directory of it is
    // theirs (as the tool's own staging directories are), and puts the named mtime back only
    // on a parent that is theirs (setting a time of one's choice takes owning the directory).
    let Some(owner) = crate::safefs::Dir::open(home)
        .and_then(|h| h.stat())
        .ok()
        .map(|st| st.st_uid)
    else {
        return marked;
    };
    let base_is_owners = base.stat().is_ok_and(|st| st.st_uid == owner);
    let Ok(names) = base.names() else {
        return marked;
    };
    let staged = |name: &std::ffi::OsStr| parent.join(name).join(JOURNAL_FILE);
    let mut removed = false;
    for name in names {
        let Some((pid, parent_mtime)) = parse_staging(name.as_bytes(), top_name.as_bytes()) else {
            continue;
        };
        if atomic::pid_alive(pid) {
            continue;
        }
        let times = match state_dir.strip_prefix(top) {
            Ok(rel) => base
                .sub(&name)
                .and_then(|d| d.walk(rel))
                .ok()
                .and_then(|d| {
                    d.read_file(std::ffi::OsStr::new(JOURNAL_FILE), MAX_STAGED_JOURNAL)
                        .ok()
                })
                .flatten()
                // Only a journal this tool wrote (ours, not writable by others) is acted on:
                // the home's owner controls the staging directory (issue 10).
                .filter(|(_, st)| {
                    check_file(st, nix::unistd::geteuid().as_raw(), &staged(&name)).is_ok()
                })
                .and_then(|(bytes, _)| serde_json::from_slice::<Journal>(&bytes).ok())
                .map(|j| j.dir_times)
                .unwrap_or_default(),
            Err(_) => continue,
        };
        if base.remove_tree_owned(&name, owner).is_ok() {
            removed = true;
            let _ = base.sync();
            restore_times(home, &times, None);
            if let (Some(t), true) = (parent_mtime, base_is_owners) {
                let _ = base.set_mtime(t);
            }
        } else {
            let _ = base.sync();
        }
    }
    removed || marked
}

/// Put back recorded mtimes (all but `skip`): newest record first, so that where a directory
/// was recorded twice its oldest time is written last.
fn restore_times(home: &Path, times: &[DirTime], skip: Option<&Path>) {
    for t in times.iter().rev() {
        if Some(t.path.as_path()) != skip {
            // Reached from the home without following a link (issue 10).
            let _ = crate::safefs::set_mtime_beneath(home, &t.path, t.mtime);
        }
    }
}

/// The end of a full undo: remove the journal and the state directories made for it, and put
/// back every recorded mtime — in an order a kill cannot spoil. The state directories (journal
/// inside, with its mtimes) are first renamed to a staging name that also records the parent's
/// old mtime; the other mtimes are put back; then the staging directory goes and the parent's
/// mtime comes back. Killed at any point, the next run (`undo` or `migrate`) finds the journal or
/// the staging directory, and finishes (see [`clear_stale_staging`]).
pub fn finish(
    home: &Path,
    state_dir: &Path,
    journal: &Journal,
    owner: Option<(u32, u32)>,
) -> std::io::Result<()> {
    remove_stale_temps(home, state_dir);
    let times = &journal.dir_times;
    let Some(top) = journal.created_state_dirs.first() else {
        // The state directory was there before: only the journal is ours.
        remove(home, state_dir, &[])?;
        restore_times(home, times, None);
        return Ok(());
    };
    let parent = top.parent().unwrap_or(Path::new("/"));
    let top_name = top
        .file_name()
        .ok_or_else(|| std::io::Error::other("the state directory has no name"))?;
    let parent_mtime = times.iter().find(|t| t.path == parent).map(|t| t.mtime);
    let staging = staging_for(top, std::process::id(), parent_mtime)
        .ok_or_else(|| std::io::Error::other("the state directory has no parent"))?;
    let staging_name = staging
        .file_name()
        .ok_or_else(|| std::io::Error::other("the state directory has no parent"))?;
    journal.save(state_dir, owner)?;
    // Everything below through the parent's descriptor, opened from the home without following
    // a link (issue 10): a directory swapped for a link cannot redirect the rename or removal.
    let base = open_below_home(home, parent)?;
    base.rename_to(top_name, &base, staging_name)?;
    base.sync()?;
    restore_times(home, times, Some(parent));
    // Removing the staging directory disturbs the parent once more, and then nothing of ours is
    // left in it to say what its mtime was: an extended attribute on the parent does (setting
    // one changes no mtime), until the mtime is back.
    let marked = parent_mtime.is_some_and(|t| mark_mtime(&base, t));
    base.remove_tree_at(staging_name)?;
    base.sync()?;
    if let Some(t) = parent_mtime {
        let _ = base.set_mtime(t);
    }
    if marked {
        base.remove_xattr(MTIME_XATTR);
    }
    Ok(())
}

/// The extended attribute that holds a directory's mtime while the tool removes the last thing
/// it made in it (see [`finish`]): `<seconds>.<nanoseconds>`.
const MTIME_XATTR: &std::ffi::CStr = c"user.disinto-claude-init.mtime";

/// Record `t` on `dir` (false where the file system has no user extended attributes).
fn mark_mtime(dir: &crate::safefs::Dir, t: (i64, i64)) -> bool {
    dir.set_xattr(MTIME_XATTR, format!("{}.{}", t.0, t.1).as_bytes())
}

/// The mtime an `undo` killed at its very end recorded on `dir`, if any.
fn marked_mtime(dir: &crate::safefs::Dir) -> Option<(i64, i64)> {
    let v = dir.get_xattr(MTIME_XATTR)?;
    let (a, b) = std::str::from_utf8(&v).ok()?.split_once('.')?;
    if b.is_empty() || !b.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Put back the mtime an `undo` killed right after removing its last directory had recorded
/// on that directory's parent (see [`finish`]), reached from the home without following a
/// link. Returns whether there was one.
pub fn finish_marked_mtime(home: &Path, state_dir: &Path) -> bool {
    let missing = crate::fsops::missing_dirs(state_dir);
    let Some(parent) = missing.first().and_then(|t| t.parent()) else {
        return false;
    };
    let Ok(dir) = open_below_home(home, parent) else {
        return false;
    };
    let Some(t) = marked_mtime(&dir) else {
        return false;
    };
    // A user xattr is input too (the home's owner can set one on their directories): the time
    // is put back only on a directory of the home's owner, who could set it themselves.
    let home_owner = crate::safefs::Dir::open(home).and_then(|h| h.stat());
    if !matches!((dir.stat(), home_owner), (Ok(d), Ok(h)) if d.st_uid == h.st_uid) {
        return false;
    }
    let _ = dir.set_mtime(t);
    dir.remove_xattr(MTIME_XATTR);
    true
}

/// Remove the temp files (`.journal.json.dci-tmp-<pid>`) that journal writes of processes that
/// are gone left in the state dir (a SIGKILL between the temp file and its rename): through the
/// state dir's descriptor, opened from the home without following a link (issue 10).
pub fn remove_stale_temps(home: &Path, state_dir: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(dir) = open_below_home(home, state_dir) else {
        return;
    };
    let Ok(names) = dir.names() else {
        return;
    };
    let prefix = format!(".{JOURNAL_FILE}.dci-tmp-");
    let mut removed = false;
    for n in names {
        let Some(pid) = n
            .as_bytes()
            .strip_prefix(prefix.as_bytes())
            .and_then(atomic::parse_pid)
        else {
            continue;
        };
        // unlink: never a directory; a link is removed, not followed.
        if !atomic::pid_alive(pid) && dir.unlink(&n).is_ok() {
            removed = true;
        }
    }
    if removed {
        let _ = dir.sync();
    }
}

/// Remove the journal and the state directories created for it (innermost first; a directory
/// that something else has since put files in is left alone).
pub fn remove(home: &Path, state_dir: &Path, created: &[PathBuf]) -> std::io::Result<()> {
    // The temp file of a journal write that a SIGKILL interrupted would keep the directory.
    remove_stale_temps(home, state_dir);
    // Through the state dir and its parents opened from the home without following a link
    // (issue 10): a directory swapped for a link cannot point these removals elsewhere.
    match open_below_home(home, state_dir) {
        Ok(d) => d.unlink(std::ffi::OsStr::new(JOURNAL_FILE))?,
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(parent) = state_dir.parent() {
        // Through a descriptor opened from the home, never by a path the owner can redirect.
        if let Ok(p) = open_below_home(home, parent) {
            let _ = p.sync();
        }
    }
    for d in created.iter().rev() {
        if let (Some(parent), Some(name)) = (d.parent(), d.file_name()) {
            if let Ok(p) = open_below_home(home, parent) {
                let _ = p.rmdir(name);
            }
        }
    }
    Ok(())
}

/// Who wrote the journal file (`st` from `fstat` of the opened file), for a process of `euid`.
pub fn check_file(st: &nix::sys::stat::FileStat, euid: u32, path: &Path) -> Result<(), String> {
    let mode = st.st_mode & 0o7777;
    if st.st_uid != euid {
        return Err(format!(
            "the journal '{}' belongs to uid {}, but this run is uid {euid}{}: it was not written \
             by a run like this one, and it will not be acted on",
            crate::pathser::show(path),
            st.st_uid,
            if euid == 0 {
                " (root acts only on a journal root wrote: the home's owner could have written this one)"
            } else {
                ""
            }
        ));
    }
    if mode & 0o022 != 0 {
        return Err(format!(
            "the journal '{}' is writable by others (mode {mode:04o}), so anyone could have \
             written it",
            crate::pathser::show(path)
        ));
    }
    if st.st_nlink != 1 {
        return Err(format!(
            "the journal '{}' has {} hard links; the tool writes it with one",
            crate::pathser::show(path),
            st.st_nlink
        ));
    }
    Ok(())
}
