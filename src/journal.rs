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

    /// The journal, if there is one. A journal that cannot be parsed is an error, never
    /// silently ignored: it may be the only record of where someone's files went.
    pub fn load(state_dir: &Path) -> std::io::Result<Option<Journal>> {
        match std::fs::read(Self::path(state_dir)) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                std::io::Error::new(
                    ErrorKind::InvalidData,
                    format!(
                        "{} is not a journal this version can read: {e}",
                        Self::path(state_dir).display()
                    ),
                )
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
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

/// `<parent>/.<name>.dci-state-<pid>`: where the missing state directories are built, with the
/// first journal inside, before one rename puts them in place.
fn staging_for(top: &Path, pid: u32) -> Option<PathBuf> {
    let parent = top.parent()?;
    let mut name = std::ffi::OsString::from(".");
    name.push(top.file_name()?);
    name.push(format!("{STAGING_TAG}{pid}"));
    Some(parent.join(name))
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
    use std::ffi::OsStr;
    let missing = crate::fsops::missing_dirs(state_dir);
    journal.created_state_dirs = missing.clone();
    let Some(top) = missing.first() else {
        return journal.save(state_dir, owner);
    };
    let staging = staging_for(top, std::process::id())
        .ok_or_else(|| std::io::Error::other("the state directory has no parent"))?;
    let (Some(parent), Some(top_name), Some(staging_name)) =
        (top.parent(), top.file_name(), staging.file_name())
    else {
        return Err(std::io::Error::other("the state directory has no parent"));
    };
    // The directory the state dirs appear in, opened without following a link below the home
    // (`~/.local/state` a link into root's tree is refused here, not written through).
    let base = open_below_home(&journal.recorded.home, parent)?;
    if base.lstat(staging_name)?.is_some() {
        std::fs::remove_dir_all(&staging)?; // ours (same pid), from a run that died
    }
    let build = || -> std::io::Result<()> {
        crate::failpoint::hook("state-dir");
        let rel = Path::new(staging_name)
            .join(state_dir.strip_prefix(top).map_err(std::io::Error::other)?);
        // Every directory created 0700 through its own descriptor, given to the home's owner.
        let (inner, _) = base.walk_create(&rel, 0o700, owner)?;
        let bytes = serde_json::to_vec_pretty(&*journal).map_err(std::io::Error::other)?;
        inner.write_atomic(OsStr::new(JOURNAL_FILE), &bytes, 0o600, None)?;
        crate::failpoint::failpoint("journal-staged")?;
        // rename(2) onto a name that appeared meanwhile fails (EEXIST/ENOTEMPTY for a
        // non-empty directory, and we check for an empty one): never merge into it.
        if base.lstat(top_name)?.is_some() {
            return Err(std::io::Error::new(
                ErrorKind::AlreadyExists,
                format!("{} appeared meanwhile", top.display()),
            ));
        }
        base.rename_to(staging_name, &base, top_name)?;
        base.sync()
    };
    build().inspect_err(|_| {
        let _ = std::fs::remove_dir_all(&staging);
    })
}

/// Remove the staging directory of a run that was killed before its first journal was in
/// place (see [`create_with_journal`]), and put back the mtime of the directory it was made
/// in, as that journal recorded it. Only staging directories of processes that are gone are
/// touched. Returns whether one was removed.
pub fn clear_stale_staging(state_dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let missing = crate::fsops::missing_dirs(state_dir);
    let Some(top) = missing.first() else {
        return false;
    };
    let (Some(parent), Some(top_name)) = (top.parent(), top.file_name()) else {
        return false;
    };
    let Ok(rd) = std::fs::read_dir(parent) else {
        return false;
    };
    let mut prefix = b".".to_vec();
    prefix.extend_from_slice(top_name.as_bytes());
    prefix.extend_from_slice(STAGING_TAG.as_bytes());
    let mut removed = false;
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .as_bytes()
            .strip_prefix(&prefix[..])
            .and_then(atomic::parse_pid)
        else {
            continue;
        };
        if atomic::pid_alive(pid) {
            continue;
        }
        let staging = parent.join(&name);
        let staged_state = match state_dir.strip_prefix(top) {
            Ok(rel) => staging.join(rel),
            Err(_) => continue,
        };
        let times = Journal::load(&staged_state)
            .ok()
            .flatten()
            .map(|j| j.dir_times)
            .unwrap_or_default();
        if std::fs::remove_dir_all(&staging).is_ok() {
            removed = true;
            let _ = atomic::sync_dir(parent);
            if let Some(t) = times.iter().find(|t| t.path == parent) {
                let _ = atomic::set_mtime(parent, t.mtime);
            }
        }
    }
    removed
}

/// Remove the journal and the state directories created for it (innermost first; a directory
/// that something else has since put files in is left alone).
pub fn remove(home: &Path, state_dir: &Path, created: &[PathBuf]) -> std::io::Result<()> {
    // The temp file of a journal write that a SIGKILL interrupted would keep the directory.
    atomic::remove_stale_temps(&Journal::path(state_dir));
    // Through the state dir and its parents opened from the home without following a link
    // (issue 10): a directory swapped for a link cannot point these removals elsewhere.
    match open_below_home(home, state_dir) {
        Ok(d) => d.unlink(std::ffi::OsStr::new(JOURNAL_FILE))?,
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(parent) = state_dir.parent() {
        let _ = atomic::sync_dir(parent);
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
