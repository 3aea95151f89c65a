//! `--wait`: queue the factory's agents behind the migration instead of refusing a busy box.
//!
//! The factory's wrapper runs every `claude` under `flock -w 600 9` on
//! `${HOME}/.claude/session.lock` (fd 9 opened with `9>"$lock_file"`). [`wait_for_agents`] takes
//! that lock with an exclusive `flock`, blocking until the agent that holds it is done (or a
//! deadline passes), then waits for Claude's proper-lockfile refresh locks (`~/.claude.lock`,
//! `<config>.lock`, `.oauth_refresh.lock` in either directory) to go away or go stale, and
//! returns a [`SessionGuard`] that **holds** `session.lock` until it is dropped. Wrapped agents
//! that start meanwhile block in their own `flock`, on the same inode: on one filesystem the
//! inode moves with the directory, so an agent that opens `~/.claude/session.lock` after the
//! switch reaches it through the new link, and one already waiting on the old path waits on it
//! too.
//!
//! The blocking `flock(2)` runs in a helper thread so that the caller can report progress every
//! second ("waiting for the agent holding session.lock (pid 4242 claude)…") while the kernel
//! does the waiting. A helper abandoned at the deadline releases the lock the moment it gets it.
//!
//! Everything in `~/.claude` is reached through a descriptor on the directory, opened with
//! `O_NOFOLLOW`: the home's owner can write there, and what they put there is input. A
//! `session.lock` that is not a regular file is refused, never followed.

use crate::error::{Error, ErrorKind};
use crate::pathser::show;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::stat::{fstat, fstatat, Mode};
use nix::unistd::{Gid, Uid};
use std::fmt;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

mod procs;
pub use procs::*;

/// The wrapper's own limit (`flock -w 600`): the default of `--wait`.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(600);

/// The name of the wrapper's lock file inside `~/.claude`.
pub const SESSION_LOCK: &str = "session.lock";

/// A proper-lockfile lock younger than this belongs to a live process; older is stale
/// (proper-lockfile refreshes its lock's mtime every few seconds while it holds it).
pub const STALE_LOCK_AFTER: Duration = Duration::from_secs(120);

/// How often progress is reported while waiting.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// What to wait for.
#[derive(Debug, Clone)]
pub struct Targets {
    /// `~/.claude`: must be a real directory (a symlink is refused, not followed).
    pub claude_dir: PathBuf,
    /// Proper-lockfile locks to wait for (see [`refresh_locks`]).
    pub refresh_locks: Vec<PathBuf>,
    /// Where `~/.claude` is going: a `session.lock` this run created is looked for there too
    /// when it is removed again (after a copy across filesystems).
    pub config_dir: Option<PathBuf>,
}

impl Targets {
    /// The usual targets for a home and a config dir.
    pub fn new(home: &Path, config_dir: &Path) -> Targets {
        Targets {
            claude_dir: home.join(".claude"),
            refresh_locks: refresh_locks(home, config_dir),
            config_dir: Some(config_dir.to_path_buf()),
        }
    }
}

/// Claude's refresh locks for a home and a config dir: `~/.claude.lock`,
/// `~/.claude/.oauth_refresh.lock`, `<config>.lock`, `<config>/.oauth_refresh.lock` (without
/// duplicates, in that order).
pub fn refresh_locks(home: &Path, config_dir: &Path) -> Vec<PathBuf> {
    let claude = home.join(".claude");
    let mut out: Vec<PathBuf> = Vec::new();
    for dir in [claude.as_path(), config_dir] {
        let mut l = dir.as_os_str().to_os_string();
        l.push(".lock");
        for p in [PathBuf::from(l), dir.join(".oauth_refresh.lock")] {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// A process, as `/proc` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    /// `/proc/PID/comm`.
    pub comm: String,
    /// `/proc/PID/cmdline`, arguments joined by spaces (lossy), at most 120 characters.
    pub cmdline: String,
}

impl Proc {
    /// Read `/proc/PID`; `None` if the process is gone.
    pub fn read(pid: u32) -> Option<Proc> {
        let base = PathBuf::from(format!("/proc/{pid}"));
        let comm = std::fs::read(base.join("comm")).ok()?;
        let comm = String::from_utf8_lossy(&comm).trim_end().to_string();
        let raw = std::fs::read(base.join("cmdline")).unwrap_or_default();
        let mut cmdline = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        if cmdline.chars().count() > 120 {
            cmdline = cmdline.chars().take(119).collect::<String>() + "…";
        }
        Some(Proc { pid, comm, cmdline })
    }
}

impl fmt::Display for Proc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} {}", self.pid, self.comm)
    }
}

/// Something the migration is waiting for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Busy {
    /// Someone holds `flock` on `session.lock`.
    SessionLock {
        path: PathBuf,
        /// The processes holding it (those whose descriptor carries the lock; a shell and the
        /// `claude` it started share one). Empty if `/proc` does not show them (another PID
        /// namespace, no permission).
        holders: Vec<Proc>,
        /// How many other processes have it open without the lock: agents queued behind it.
        queued: usize,
    },
    /// A proper-lockfile refresh lock less than [`STALE_LOCK_AFTER`] old.
    RefreshLock { path: PathBuf, age: Duration },
}

impl fmt::Display for Busy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Busy::SessionLock { holders, .. } if holders.is_empty() => write!(
                f,
                "the agent holding session.lock (not found in /proc: it may have just finished, or it runs in another PID namespace)"
            ),
            Busy::SessionLock { holders, .. } => {
                let list: Vec<String> = holders.iter().map(|p| p.to_string()).collect();
                write!(f, "the agent holding session.lock ({})", list.join(", "))
            }
            Busy::RefreshLock { path, age } => write!(
                f,
                "Claude's OAuth refresh lock '{}' to go away ({} s old)",
                show(path),
                age.as_secs()
            ),
        }
    }
}

impl Busy {
    /// The lock file or directory this is about.
    pub fn path(&self) -> &Path {
        match self {
            Busy::SessionLock { path, .. } | Busy::RefreshLock { path, .. } => path,
        }
    }
}

/// Why waiting did not end with the lock held.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The deadline passed with something still busy. Nothing was changed.
    #[error("waited {} s; still busy: {}", waited.as_secs(), busy_list(busy))]
    Timeout { waited: Duration, busy: Vec<Busy> },
    /// `~/.claude/session.lock` (or `~/.claude`) is not what the wrapper would use: a symlink,
    /// a FIFO, a directory.
    #[error(
        "'{}' is {found}, not a regular file: the factory's wrapper would lock whatever it names",
        show(path)
    )]
    NotALockFile { path: PathBuf, found: &'static str },
    #[error("{op} '{}': {source}", show(path))]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

fn busy_list(b: &[Busy]) -> String {
    let v: Vec<String> = b.iter().map(|x| x.to_string()).collect();
    v.join("; ")
}

impl WaitError {
    /// The contract's error: exit 3 (nothing changed), with what was busy and the fix.
    /// `rerun` is the command to run again with a longer wait (e.g. `disinto-claude-init --yes
    /// --wait 1800`).
    pub fn to_error(&self, rerun: &str) -> Error {
        match self {
            WaitError::Timeout { waited, busy } => {
                let what: Vec<String> = busy
                    .iter()
                    .map(|b| match b {
                        Busy::SessionLock {
                            path,
                            holders,
                            queued,
                        } => {
                            let who = if holders.is_empty() {
                                "a process this tool cannot see (another PID namespace?)".into()
                            } else {
                                holders
                                    .iter()
                                    .map(|p| format!("pid {} ({})", p.pid, p.cmdline_or_comm()))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            };
                            let q = if *queued > 0 {
                                format!("; {queued} more process(es) queued behind it")
                            } else {
                                String::new()
                            };
                            format!("'{}' is still locked by {who}{q}", show(path))
                        }
                        Busy::RefreshLock { path, age } => format!(
                            "Claude's OAuth refresh lock '{}' is still there ({} s old: a Claude process is refreshing its token)",
                            show(path),
                            age.as_secs()
                        ),
                    })
                    .collect();
                Error::new(
                    ErrorKind::WaitTimeout,
                    format!(
                        "Waited {} s for the agents to finish, and {}. Nothing was changed.",
                        waited.as_secs(),
                        what.join("; ")
                    ),
                )
                .with_fix(format!(
                    "let the agent finish and re-run, wait longer: {rerun}, or stop the factory first: disinto down && disinto-claude-init --yes && disinto up"
                ))
            }
            WaitError::NotALockFile { path, .. } => Error::new(
                ErrorKind::SessionLockNotAFile,
                format!("{self}. Nothing was changed."),
            )
            .with_fix(format!(
                "look at it, and move it aside if it is not yours: mv '{}' ~/session.lock.bak",
                show(path)
            )),
            WaitError::Io { source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                Error::new(
                    ErrorKind::NoPermission,
                    format!("{self}. Nothing was changed."),
                )
                .with_fix("re-run with sudo, or as the home's owner")
            }
            WaitError::Io { .. } => {
                Error::new(ErrorKind::Io, format!("{self}. Nothing was changed."))
            }
        }
    }
}

impl Proc {
    fn cmdline_or_comm(&self) -> &str {
        if self.cmdline.is_empty() {
            &self.comm
        } else {
            &self.cmdline
        }
    }
}

/// `session.lock`, locked: agents that take the wrapper's lock wait until this is dropped.
///
/// If the file did not exist, it was created (so that agents starting meanwhile queue on it),
/// and it is removed again when the guard goes, unless an agent has opened it by then (then
/// it is the wrapper's, as it would have created it anyway): `~/.claude` ends as the plan
/// says, with no file of ours in it.
#[derive(Debug)]
pub struct SessionGuard {
    lock: Option<Flock<File>>,
    /// `~/.claude`, the directory itself (wherever it is moved on this filesystem).
    dir: OwnedFd,
    path: PathBuf,
    dev: u64,
    ino: u64,
    created: Option<Created>,
    config_dir: Option<PathBuf>,
    waited: Duration,
    taken_at: Instant,
}

/// What creating `session.lock` changed: `~/.claude`'s times before, and its mtime after.
#[derive(Debug, Clone, Copy)]
struct Created {
    before: nix::sys::stat::FileStat,
    mtime_after: (i64, i64),
}

impl SessionGuard {
    /// `~/.claude/session.lock` as given.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// `(st_dev, st_ino)` of the locked file: after a same-filesystem move,
    /// `<config>/session.lock` is this inode.
    pub fn inode(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }
    /// Whether the file did not exist and was created (empty, mode 0600, owned like
    /// `~/.claude`) so that agents starting during the migration have something to queue on.
    pub fn created(&self) -> bool {
        self.created.is_some()
    }
    /// How long it took to get here.
    pub fn waited(&self) -> Duration {
        self.waited
    }
    /// How long the lock has been held so far.
    pub fn held_for(&self) -> Duration {
        self.taken_at.elapsed()
    }
    /// Release the lock now (removing a `session.lock` this run created, unless an agent has
    /// opened it); how long it was held, and whether a created file was removed.
    pub fn release(mut self) -> (Duration, bool) {
        let removed = self.remove_created();
        let held = self.held_for();
        self.lock = None;
        (held, removed)
    }

    /// A `session.lock` this run created goes again, under the lock, if no other process has it
    /// open: from `~/.claude` (wherever it is now on this filesystem), or from the config dir
    /// after a copy across filesystems removed the original. The directory's times are put
    /// back when nothing else changed it since.
    fn remove_created(&mut self) -> bool {
        let Some(c) = self.created.take() else {
            return false;
        };
        if flock_holders(self.dev, self.ino).1 > 0 {
            return false; // an agent opened it: the wrapper's now
        }
        let alive = fstat(self.dir.as_fd()).is_ok_and(|d| d.st_nlink > 0);
        if alive {
            return unlink_lock_in(&self.dir, Some((self.dev, self.ino)), &c);
        }
        let Some(config) = &self.config_dir else {
            return false;
        };
        let Ok(dir) = open_claude_dir(config) else {
            return false;
        };
        // The copy of our empty file: nobody may have it open either.
        match fstatat(
            dir.as_fd(),
            SESSION_LOCK,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st)
                if st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFREG
                    && st.st_size == 0
                    && flock_holders(st.st_dev, st.st_ino) == (Vec::new(), 0) =>
            {
                unlink_lock_in(&dir, Some((st.st_dev, st.st_ino)), &c)
            }
            _ => false,
        }
    }

    /// The locked descriptor (for tests: `fstat` it).
    pub fn file(&self) -> &File {
        self.lock.as_ref().expect("held until released")
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.remove_created();
    }
}

/// Unlink `session.lock` in `dir` if it is still the inode `want`, and put the directory's
/// times back to `c.before` if its mtime is still the one creating the file gave it (nothing
/// else changed the directory since).
fn unlink_lock_in(dir: &OwnedFd, want: Option<(u64, u64)>, c: &Created) -> bool {
    let named = fstatat(
        dir.as_fd(),
        SESSION_LOCK,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .is_ok_and(|st| want.is_none_or(|w| (st.st_dev, st.st_ino) == w));
    if !named {
        return false;
    }
    let untouched =
        fstat(dir.as_fd()).is_ok_and(|d| (d.st_mtime, d.st_mtime_nsec) == c.mtime_after);
    if nix::unistd::unlinkat(
        dir.as_fd(),
        SESSION_LOCK,
        nix::unistd::UnlinkatFlags::NoRemoveDir,
    )
    .is_err()
    {
        return false;
    }
    if untouched {
        use nix::sys::time::TimeSpec;
        let at = TimeSpec::new(c.before.st_atime, c.before.st_atime_nsec);
        let mt = TimeSpec::new(c.before.st_mtime, c.before.st_mtime_nsec);
        let _ = nix::sys::stat::futimens(dir.as_fd(), &at, &mt);
    }
    true
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(Errno) -> WaitError + 'a {
    move |e| WaitError::Io {
        path: path.to_path_buf(),
        op,
        source: std::io::Error::from_raw_os_error(e as i32),
    }
}

/// Open `~/.claude` itself, never through a symlink.
fn open_claude_dir(dir: &Path) -> Result<OwnedFd, WaitError> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match nix::fcntl::openat(nix::fcntl::AT_FDCWD, dir, flags, Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(Errno::ELOOP) => Err(WaitError::NotALockFile {
            path: dir.to_path_buf(),
            found: "a symlink",
        }),
        Err(Errno::ENOTDIR) => Err(WaitError::NotALockFile {
            path: dir.to_path_buf(),
            found: "not a directory",
        }),
        Err(e) => Err(io_err(dir, "open")(e)),
    }
}

fn kind_name(mode: u32) -> &'static str {
    match mode & nix::libc::S_IFMT {
        nix::libc::S_IFDIR => "a directory",
        nix::libc::S_IFLNK => "a symlink",
        nix::libc::S_IFIFO => "a FIFO",
        nix::libc::S_IFSOCK => "a socket",
        nix::libc::S_IFCHR | nix::libc::S_IFBLK => "a device",
        _ => "a special file",
    }
}

/// Open `session.lock` in the directory `dir` without following a symlink and without
/// blocking on a FIFO; `Ok(None)` when it does not exist.
fn open_session_lock(dir: &OwnedFd, path: &Path) -> Result<Option<File>, WaitError> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = match nix::fcntl::openat(dir.as_fd(), SESSION_LOCK, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(Errno::ELOOP) => {
            return Err(WaitError::NotALockFile {
                path: path.to_path_buf(),
                found: "a symlink",
            })
        }
        Err(e) => return Err(io_err(path, "open")(e)),
    };
    let st = fstat(fd.as_fd()).map_err(io_err(path, "fstat"))?;
    if st.st_mode & nix::libc::S_IFMT != nix::libc::S_IFREG {
        return Err(WaitError::NotALockFile {
            path: path.to_path_buf(),
            found: kind_name(st.st_mode),
        });
    }
    Ok(Some(File::from(fd)))
}

/// Create `session.lock` (empty, 0600, owned like `~/.claude`); `Ok(None)` if someone else
/// created it first.
fn create_session_lock(dir: &OwnedFd, path: &Path) -> Result<Option<File>, WaitError> {
    let flags = OFlag::O_RDONLY
        | OFlag::O_CREAT
        | OFlag::O_EXCL
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_CLOEXEC;
    let fd = match nix::fcntl::openat(
        dir.as_fd(),
        SESSION_LOCK,
        flags,
        Mode::from_bits_truncate(0o600),
    ) {
        Ok(fd) => fd,
        Err(Errno::EEXIST) => return Ok(None),
        Err(e) => return Err(io_err(path, "create")(e)),
    };
    let d = fstat(dir.as_fd()).map_err(io_err(path, "fstat"))?;
    let f = File::from(fd);
    if let Err(e) = nix::unistd::fchown(
        f.as_fd(),
        Some(Uid::from_raw(d.st_uid)),
        Some(Gid::from_raw(d.st_gid)),
    ) {
        let _ = nix::unistd::unlinkat(
            dir.as_fd(),
            SESSION_LOCK,
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
        return Err(io_err(path, "chown")(e));
    }
    Ok(Some(f))
}

/// Whether `session.lock` in `dir` is still the inode `f` (the file was not replaced or
/// removed while we waited for it).
fn still_named(dir: &OwnedFd, f: &File, path: &Path) -> Result<bool, WaitError> {
    let a = fstat(f.as_fd()).map_err(io_err(path, "fstat"))?;
    match fstatat(
        dir.as_fd(),
        SESSION_LOCK,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    ) {
        Ok(b) => Ok(a.st_dev == b.st_dev && a.st_ino == b.st_ino),
        Err(Errno::ENOENT) => Ok(false),
        Err(e) => Err(io_err(path, "stat")(e)),
    }
}

/// Fresh refresh locks among `paths`, now.
pub fn fresh_refresh_locks(paths: &[PathBuf]) -> Vec<Busy> {
    paths
        .iter()
        .filter_map(|p| {
            let m = std::fs::symlink_metadata(p).ok()?;
            let age = SystemTime::now()
                .duration_since(m.modified().ok()?)
                .unwrap_or_default();
            (age < STALE_LOCK_AFTER).then(|| Busy::RefreshLock {
                path: p.clone(),
                age,
            })
        })
        .collect()
}

/// What a `--wait` would wait for right now, without waiting or locking anything (for
/// `--dry-run`): the holder of `session.lock` if someone holds it, and fresh refresh locks.
pub fn inspect(t: &Targets) -> Result<Vec<Busy>, WaitError> {
    let mut out = Vec::new();
    let dir = match open_claude_dir(&t.claude_dir) {
        Ok(d) => Some(d),
        Err(WaitError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let path = t.claude_dir.join(SESSION_LOCK);
    if let Some(dir) = &dir {
        if let Some(f) = open_session_lock(dir, &path)? {
            let st = fstat(f.as_fd()).map_err(io_err(&path, "fstat"))?;
            // A try-lock, released at once when `f` closes.
            if let Err((f, _)) = Flock::lock(f, FlockArg::LockExclusiveNonblock) {
                drop(f);
                let (holders, queued) = flock_holders(st.st_dev, st.st_ino);
                out.push(Busy::SessionLock {
                    path: path.clone(),
                    holders,
                    queued,
                });
            }
        }
    }
    out.extend(fresh_refresh_locks(&t.refresh_locks));
    Ok(out)
}

/// Sleep-free progress clock: says when the next report is due.
struct Reporter<'a> {
    progress: &'a mut dyn FnMut(&Busy),
    next: Option<Instant>,
}

impl Reporter<'_> {
    fn due(&self) -> bool {
        self.next.is_none_or(|n| Instant::now() >= n)
    }
    fn report(&mut self, b: &Busy) {
        (self.progress)(b);
        self.next = Some(Instant::now() + PROGRESS_EVERY);
    }
    /// Time until the next report (zero if due).
    fn until_next(&self) -> Duration {
        self.next
            .map(|n| n.saturating_duration_since(Instant::now()))
            .unwrap_or_default()
    }
}

/// Take `session.lock` in `dir` (already open as `f`), blocking until `deadline`.
fn lock_until(
    f: File,
    path: &Path,
    start: Instant,
    deadline: Instant,
    rep: &mut Reporter<'_>,
) -> Result<Flock<File>, WaitError> {
    let st = fstat(f.as_fd()).map_err(io_err(path, "fstat"))?;
    let f = match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(l) => return Ok(l),
        Err((f, Errno::EWOULDBLOCK)) => f,
        Err((_, e)) => return Err(io_err(path, "flock")(e)),
    };
    // The kernel does the waiting, in a helper thread; we report progress meanwhile.
    let (tx, rx) = mpsc::channel::<Result<Flock<File>, Errno>>();
    std::thread::Builder::new()
        .name("session-lock".into())
        .spawn(move || {
            let mut f = f;
            let res = loop {
                match Flock::lock(f, FlockArg::LockExclusive) {
                    Ok(l) => break Ok(l),
                    Err((back, Errno::EINTR)) => f = back,
                    Err((_, e)) => break Err(e),
                }
            };
            // If the waiter gave up (deadline), the send fails and the lock is dropped: released
            // the moment it was granted.
            let _ = tx.send(res);
        })
        .map_err(|e| WaitError::Io {
            path: path.to_path_buf(),
            op: "start a thread to wait for",
            source: e,
        })?;
    loop {
        let now = Instant::now();
        if now >= deadline {
            let (holders, queued) = flock_holders(st.st_dev, st.st_ino);
            return Err(WaitError::Timeout {
                waited: start.elapsed(),
                busy: vec![Busy::SessionLock {
                    path: path.to_path_buf(),
                    holders,
                    queued,
                }],
            });
        }
        if rep.due() {
            let (holders, queued) = flock_holders(st.st_dev, st.st_ino);
            rep.report(&Busy::SessionLock {
                path: path.to_path_buf(),
                holders,
                queued,
            });
        }
        let step = rep
            .until_next()
            .min(deadline - now)
            .max(Duration::from_millis(1));
        match rx.recv_timeout(step) {
            Ok(Ok(l)) => return Ok(l),
            Ok(Err(e)) => return Err(io_err(path, "flock")(e)),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(WaitError::Io {
                    path: path.to_path_buf(),
                    op: "wait for the lock on",
                    source: std::io::Error::other("the waiting thread ended"),
                })
            }
        }
    }
}

/// Poll `paths` (with backoff, 10 ms up to 250 ms) until no refresh lock is fresh or the
/// deadline passes. There is nothing to block on in the kernel for a directory disappearing
/// short of inotify on every parent; the locks live seconds.
fn wait_refresh_locks(
    paths: &[PathBuf],
    start: Instant,
    deadline: Instant,
    rep: &mut Reporter<'_>,
) -> Result<(), WaitError> {
    let mut backoff = Duration::from_millis(10);
    loop {
        let fresh = fresh_refresh_locks(paths);
        let Some(first) = fresh.first() else {
            return Ok(());
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(WaitError::Timeout {
                waited: start.elapsed(),
                busy: fresh,
            });
        }
        if rep.due() {
            rep.report(first);
        }
        std::thread::sleep(backoff.min(deadline - now));
        backoff = (backoff * 2).min(Duration::from_millis(250));
    }
}

/// Wait, up to `limit`, until no agent is busy with `~/.claude`, and return with
/// `session.lock` held.
///
/// In order: the refresh locks are waited for (unlocked: a wrapped agent that holds one also
/// holds `session.lock`, so this mostly waits for an unwrapped `claude`), then `session.lock`
/// is taken, blocking (created first, empty, 0600 and owned like `~/.claude`, if it does not
/// exist, so that agents starting during the migration queue on it), then the refresh locks
/// are checked again under the lock. A `session.lock` replaced while we waited is taken again
/// under its new inode. `progress` is called when waiting starts and then every second.
///
/// On error nothing is left behind: a `session.lock` this call created is removed again (and
/// `~/.claude`'s times put back) unless another process has opened it meanwhile.
pub fn wait_for_agents(
    t: &Targets,
    limit: Duration,
    progress: &mut dyn FnMut(&Busy),
) -> Result<SessionGuard, WaitError> {
    let start = Instant::now();
    let deadline = start + limit;
    let mut rep = Reporter {
        progress,
        next: None,
    };
    let dir = open_claude_dir(&t.claude_dir)?;
    let path = t.claude_dir.join(SESSION_LOCK);
    wait_refresh_locks(&t.refresh_locks, start, deadline, &mut rep)?;
    loop {
        let (f, created) = match open_session_lock(&dir, &path)? {
            Some(f) => (f, None),
            None => {
                let before = fstat(dir.as_fd()).map_err(io_err(&path, "fstat"))?;
                match create_session_lock(&dir, &path)? {
                    Some(f) => {
                        let after = fstat(dir.as_fd()).map_err(io_err(&path, "fstat"))?;
                        let mtime_after = (after.st_mtime, after.st_mtime_nsec);
                        (
                            f,
                            Some(Created {
                                before,
                                mtime_after,
                            }),
                        )
                    }
                    None => continue, // created by someone else just now: open theirs
                }
            }
        };
        // Should this time out on a file we just created, someone else locked it: it is
        // theirs now, and stays.
        let l = lock_until(f, &path, start, deadline, &mut rep)?;
        if !still_named(&dir, &l, &path)? {
            // Replaced or removed while we waited: the wrapper now locks another inode.
            continue;
        }
        let st = fstat(l.as_fd()).map_err(io_err(&path, "fstat"))?;
        let guard = SessionGuard {
            lock: Some(l),
            dir,
            path,
            dev: st.st_dev,
            ino: st.st_ino,
            created,
            config_dir: t.config_dir.clone(),
            waited: start.elapsed(),
            taken_at: Instant::now(),
        };
        // On a timeout here the guard goes, and with it a lock file this call created.
        wait_refresh_locks(&t.refresh_locks, start, deadline, &mut rep)?;
        return Ok(guard);
    }
}

#[cfg(test)]
mod tests;
