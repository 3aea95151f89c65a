//! Checks made before the first change: each failure is a refusal (exit 3) that changes nothing.
//!
//! - an agent is running (someone holds `flock` on `~/.claude/session.lock`, a fresh
//!   proper-lockfile lock directory exists, or a process has its cwd or a file open under
//!   `~/.claude`): moving the directory under it would break that run;
//! - no permission to create or write what the plan needs;
//! - not enough space for a cross-device copy.

use crate::error::{Error, ErrorKind};
use crate::fsops::{self, nearest_existing};
use crate::pathser::show;
use crate::plan::Plan;
use crate::settings::Settings;
use crate::step::{human_bytes, Method, MoveConfig, Step, WriteEnvFile};
use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{access, AccessFlags};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A proper-lockfile lock directory younger than this belongs to a live process; older is stale.
/// proper-lockfile refreshes its lock's mtime every few seconds while it holds it.
pub const STALE_LOCK_AFTER: Duration = Duration::from_secs(120);

/// Age of a lock directory, if it exists.
pub fn lock_age(path: &Path) -> Option<Duration> {
    let m = std::fs::symlink_metadata(path).ok()?;
    Some(
        SystemTime::now()
            .duration_since(m.modified().ok()?)
            .unwrap_or_default(),
    )
}

/// Claude Code's second OAuth lock (since about 2.1.19x): `<claude dir>/.oauth_refresh.lock`,
/// a proper-lockfile lock directory (`realpath: false`) taken besides the legacy one.
pub const OAUTH_LOCK: &str = ".oauth_refresh.lock";
/// Its owner record (2.1.332): JSON naming the `pid` that holds the lock.
pub const OAUTH_LOCK_OWNER: &str = ".oauth_refresh.lock.owner";
/// proper-lockfile calls a lock stale when its mtime is older than `stale` (Claude 2.1.332
/// passes 60 s, and refreshes the mtime every 5 s while it holds it).
pub const OAUTH_LOCK_STALE_AFTER: Duration = Duration::from_secs(60);

/// A fresh `.oauth_refresh.lock` found in a Claude config dir: a refresh in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OauthLock {
    pub path: PathBuf,
    pub age: Duration,
    /// The pid its owner file names, with the process's name when it runs on this host.
    pub pid: Option<(u32, Option<String>)>,
}

impl OauthLock {
    pub fn describe(&self) -> String {
        let who = match &self.pid {
            Some((pid, Some(comm))) => format!(", held by PID {pid} ({comm})"),
            Some((pid, None)) => format!(
                ", held by PID {pid} according to its owner file (not a process of this host: perhaps in a container)"
            ),
            None => String::new(),
        };
        format!(
            "Claude's OAuth refresh lock '{}' is {}s old{who}: a Claude process is refreshing its token right now",
            show(&self.path),
            self.age.as_secs()
        )
    }
}

/// The `.oauth_refresh.lock` in `dir` (`~/.claude` or the config dir), if it is fresh by
/// proper-lockfile's rule (mtime no older than [`OAUTH_LOCK_STALE_AFTER`]). A stale one is
/// `None`: proper-lockfile takes it over, so it stops nothing. Read-only; `--wait` polls it.
pub fn fresh_oauth_lock(dir: &Path) -> Option<OauthLock> {
    let path = dir.join(OAUTH_LOCK);
    let age = lock_age(&path)?;
    if age > OAUTH_LOCK_STALE_AFTER {
        return None;
    }
    let pid = std::fs::read(dir.join(OAUTH_LOCK_OWNER))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("pid")?.as_u64())
        .and_then(|p| u32::try_from(p).ok())
        .map(|pid| {
            let comm = crate::atomic::pid_alive(pid as i32)
                .then(|| std::fs::read_to_string(format!("/proc/{pid}/comm")).ok())
                .flatten()
                .map(|c| c.trim().to_string());
            (pid, comm)
        });
    Some(OauthLock { path, age, pid })
}

pub fn lock_dirs(s: &Settings) -> [PathBuf; 2] {
    let mut c = s.config_dir.clone().into_os_string();
    c.push(".lock");
    [s.home.join(".claude.lock"), PathBuf::from(c)]
}

/// Is an agent using `~/.claude` right now? Returns what was found.
pub fn agent_running(s: &Settings) -> Option<String> {
    let session = s.claude_dir().join("session.lock");
    // Opening for reading creates nothing; the try-lock is released when the file closes.
    if let Ok(f) = std::fs::File::open(&session) {
        if Flock::lock(f, FlockArg::LockExclusiveNonblock).is_err() {
            return Some(format!("a process holds the lock on '{}' (the factory's wrapper takes it around every Claude run)", show(&session)));
        }
    }
    for l in lock_dirs(s) {
        if let Some(age) = lock_age(&l) {
            if age < STALE_LOCK_AFTER {
                return Some(format!(
                    "Claude's OAuth refresh lock '{}' is {}s old: a Claude process is refreshing its token right now",
                    show(&l),
                    age.as_secs()
                ));
            }
        }
    }
    for dir in [s.claude_dir(), s.config_dir.clone()] {
        if let Some(l) = fresh_oauth_lock(&dir) {
            return Some(l.describe());
        }
    }
    let pids = processes_using(&s.claude_dir());
    if !pids.is_empty() {
        let list: Vec<String> = pids.iter().map(|(p, c)| format!("{p} ({c})")).collect();
        return Some(format!(
            "processes have their working directory or open files under '{}': PID {}",
            show(&s.claude_dir()),
            list.join(", ")
        ));
    }
    None
}

/// Best effort, Linux `/proc`: processes whose cwd or an open file is under `dir` (resolved).
pub fn processes_using(dir: &Path) -> Vec<(u32, String)> {
    let Ok(real) = std::fs::canonicalize(dir) else {
        return Vec::new();
    };
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let base = p.path();
        let mut hit = std::fs::read_link(base.join("cwd")).is_ok_and(|c| c.starts_with(&real));
        if !hit {
            if let Ok(fds) = std::fs::read_dir(base.join("fd")) {
                hit = fds
                    .flatten()
                    .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.starts_with(&real)));
            }
        }
        if hit {
            let comm = std::fs::read_to_string(base.join("comm"))
                .unwrap_or_default()
                .trim()
                .to_string();
            out.push((pid, comm));
        }
    }
    out
}

fn writable(dir: &Path) -> bool {
    access(dir, AccessFlags::W_OK | AccessFlags::X_OK).is_ok()
}

/// Run every check the plan needs. `Ok(())` means go. With `waiting` (`--wait`), a running
/// agent is left to `live` (queued, not refused).
pub fn check_with(plan: &Plan, s: &Settings, waiting: bool) -> Result<(), Error> {
    if plan.touches_claude() && !waiting {
        if let Some(found) = agent_running(s) {
            return Err(Error::new(
                ErrorKind::AgentRunning,
                format!("An agent is running: {found}. Moving its config directory under it would break that run and could lose a refreshed OAuth token."),
            )
            .with_fix("stop the factory first, then re-run: disinto down && disinto-claude-init --yes && disinto up   (a refresh holds Claude's lock directories, '<config>.lock' and '<config>/.oauth_refresh.lock', for seconds; one left by a killed process stops nothing once stale: 120 s for the first, 60 s for the second)"));
        }
    }
    // A file can only be written atomically into a directory that exists: say so now rather
    // than fail (and roll back) at that step.
    for st in plan.runnable() {
        if let Step::WriteEnvFile(WriteEnvFile { path }) = st {
            if let Some(dir) = path.parent().filter(|d| !d.is_dir()) {
                return Err(Error::new(
                    ErrorKind::EnvFileDirMissing,
                    format!(
                        "The env file '{}' is in '{}', which does not exist (is FACTORY_ROOT right?).",
                        show(path),
                        show(dir)
                    ),
                )
                .with_fix("pass the factory's env file: disinto-claude-init --env-file /path/to/factory/.env (or --no-env-file)"));
            }
        }
    }
    // Permissions: the nearest existing ancestor of everything we create or replace.
    if s.euid != 0 {
        let need: Vec<(PathBuf, &str)> = plan.runnable().filter_map(Step::write_need).collect();
        for (dir, why) in need {
            if !writable(&dir) {
                let fix = if dir.starts_with(&s.home) {
                    format!("make '{}' writable by you, or re-run with sudo", show(&dir))
                } else {
                    format!(
                        "re-run with sudo (sudo -E disinto-claude-init --yes), or choose a shared dir you can write: --shared-dir {}/claude-shared",
                        show(&s.home)
                    )
                };
                return Err(Error::new(
                    ErrorKind::NoPermission,
                    format!(
                        "You (uid {}) cannot write '{}', which is needed to {why}.",
                        s.euid,
                        show(&dir)
                    ),
                )
                .with_fix(fix));
            }
        }
    }
    // Space for a cross-device copy: what the tree takes on the target filesystem plus a
    // margin, and the inodes.
    for st in plan.runnable() {
        if let Step::MoveConfig(MoveConfig {
            from,
            to,
            method: Method::VerifiedCopy,
            bytes,
            files,
        }) = st
        {
            let (need_bytes, need_inodes) = copy_need(from, to).unwrap_or((*bytes, *files));
            space_check(to, need_bytes, need_inodes)?;
        }
    }
    Ok(())
}

/// What a copy of the tree at `from` takes on the filesystem that will hold `to`: bytes, with
/// every file rounded up to that filesystem's block (a 1-byte transcript takes a whole 4 KiB
/// block, and `projects/` holds thousands of small files), plus a block for each directory and
/// for each symlink too long to live in its inode; and inodes, one per entry (directories and
/// symlinks need one too; hard-linked files count once). The plan's `bytes`/`files` count
/// only regular files' sizes, which a tree of many small files or directories outgrows.
pub fn copy_need(from: &Path, to: &Path) -> Result<(u64, u64), fsops::FsError> {
    let dst = nearest_existing(to);
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    let block = nix::sys::statvfs::statvfs(&dst)
        .map(|v| v.fragment_size() as u64)
        .unwrap_or(4096)
        .clamp(512, 1 << 20);
    fsops::copy_footprint(from, block)
}

/// Whether the filesystem holding `to` can take `bytes` in `files` files, with a margin of
/// 5% + 16 MiB (directories and metadata blocks are not counted in `bytes`).
pub fn space_check(to: &Path, bytes: u64, files: u64) -> Result<(), Error> {
    let (avail, inodes) =
        fsops::free_space(to).map_err(|e| Error::new(ErrorKind::Io, e.to_string()))?;
    let need = bytes + bytes / 20 + 16 * 1024 * 1024;
    if avail < need {
        return Err(Error::new(
            ErrorKind::NoSpace,
            format!(
                "The filesystem holding '{}' has {} free; the copy needs {} ({} of files plus a margin). A copy that runs out of space half way is exactly how the predecessor lost credentials.",
                show(to),
                human_bytes(avail),
                human_bytes(need),
                human_bytes(bytes)
            ),
        )
        .with_fix(format!("free at least {} there, or choose another place: --shared-dir DIR", human_bytes(need - avail))));
    }
    if inodes != 0 && inodes < files + 1024 {
        return Err(Error::new(
            ErrorKind::NoSpace,
            format!(
                "The filesystem holding '{}' has {inodes} free inodes; the copy needs about {}.",
                show(to),
                files + 1024
            ),
        )
        .with_fix("free inodes there, or choose another place: --shared-dir DIR"));
    }
    Ok(())
}
