//! Reading `/proc`: who holds or waits for a `flock` on an inode (`/proc/locks`, `fdinfo`), and
//! which processes work in `~/.claude` without the wrapper's lock.

use super::*;

/// Who holds, and who waits for, a `flock` on the inode `(dev, ino)`, from `/proc`.
///
/// Holders: processes with a descriptor on the inode whose `/proc/PID/fdinfo` lists a `FLOCK`
/// lock (every process sharing the locked open file description: the wrapper's shell and the
/// `claude` it started), plus the pid `/proc/locks` records for the inode when that process
/// still has the file open. Queued: the other processes with the file open. This process is
/// left out.
pub fn flock_holders(dev: u64, ino: u64) -> (Vec<Proc>, usize) {
    let me = std::process::id();
    let mut holders: Vec<u32> = Vec::new();
    let mut openers: Vec<u32> = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return (Vec::new(), 0);
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let mut opened = false;
        let mut locked = false;
        for fd in fds.flatten() {
            // stat(2) through the magic link: the open file's own inode.
            let Ok(m) = std::fs::metadata(fd.path()) else {
                continue;
            };
            use std::os::unix::fs::MetadataExt;
            if m.dev() != dev || m.ino() != ino {
                continue;
            }
            opened = true;
            let info = p.path().join("fdinfo").join(fd.file_name());
            if std::fs::read_to_string(info).is_ok_and(|s| {
                s.lines()
                    .any(|l| l.starts_with("lock:") && l.contains("FLOCK") && !l.contains("->"))
            }) {
                locked = true;
            }
        }
        if locked {
            holders.push(pid);
        } else if opened {
            openers.push(pid);
        }
    }
    // /proc/locks names the process that called flock(2): for `flock -w 600 9` that is the
    // short-lived flock(1), gone by now; only a live one that still has the file open counts.
    if let Some(pid) = proc_locks_pid(dev, ino) {
        if let Some(i) = openers.iter().position(|p| *p == pid) {
            openers.remove(i);
            holders.push(pid);
        }
    }
    holders.sort_unstable();
    holders.dedup();
    (
        holders.into_iter().filter_map(Proc::read).collect(),
        openers.len(),
    )
}

/// The parent pid from `/proc/PID/stat` (the field after the parenthesised command name,
/// which may itself hold spaces and parentheses).
pub(super) fn ppid(pid: u32) -> Option<u32> {
    let s = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let close = s.iter().rposition(|b| *b == b')')?;
    let rest = std::str::from_utf8(&s[close + 1..]).ok()?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Processes with their working directory or an open file under `claude_dir` (a real
/// directory), other than this one. An open `session.lock` (the inode `session`) does not
/// count: that is the wrapper, queued or holding. With `skip_wrapped`, processes that have
/// `session.lock` open, and their descendants (the `claude` a wrapper runs and what it
/// starts), are left out entirely: they are the agents `--wait` waits for. Without it (once
/// the lock is ours), anything still using `~/.claude` besides the lock file is reported:
/// it works there without the lock.
pub fn unwrapped_users(
    claude_dir: &Path,
    session: Option<(u64, u64)>,
    skip_wrapped: bool,
) -> Vec<Proc> {
    use std::collections::{HashMap, HashSet};
    let Ok(real) = std::fs::canonicalize(claude_dir) else {
        return Vec::new();
    };
    let mut using: Vec<u32> = Vec::new();
    let mut wrapped: HashSet<u32> = HashSet::new();
    for u in procs_under(&real) {
        let mut hit = u.cwd;
        for ino in &u.files {
            if Some(*ino) == session {
                wrapped.insert(u.pid);
            } else {
                hit = true;
            }
        }
        if hit {
            using.push(u.pid);
        }
    }
    let mut parents: HashMap<u32, Option<u32>> = HashMap::new();
    let mut under_wrapper = |pid: u32| {
        let mut cur = Some(pid);
        for _ in 0..64 {
            let Some(c) = cur else { return false };
            if wrapped.contains(&c) {
                return true;
            }
            if c <= 1 {
                return false;
            }
            cur = *parents.entry(c).or_insert_with(|| ppid(c));
        }
        false
    };
    using.sort_unstable();
    using
        .into_iter()
        .filter(|pid| !(skip_wrapped && under_wrapper(*pid)))
        .filter_map(Proc::read)
        .collect()
}

/// A process's use of a directory tree: its cwd there, and the `(st_dev, st_ino)` of each of
/// its open files there.
pub(super) struct Usage {
    pid: u32,
    cwd: bool,
    files: Vec<(u64, u64)>,
}

/// Every process but this one that has its cwd or an open file under `real` (a canonical
/// path). This runs while the factory's agents wait (under `session.lock`), so it is made
/// cheap: each process's `/proc/PID/fd` is read relative to its descriptor (`readlinkat`,
/// `fstatat`, no path walked twice), and the processes are split among a few threads.
pub(super) fn procs_under(real: &Path) -> Vec<Usage> {
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let pids: Vec<u32> = procs
        .flatten()
        .filter_map(|p| p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|p| *p != me)
        .collect();
    pids.into_iter().filter_map(|p| usage(p, real)).collect()
}

pub(super) fn usage(pid: u32, real: &Path) -> Option<Usage> {
    let dirflags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let base = nix::fcntl::openat(
        nix::fcntl::AT_FDCWD,
        format!("/proc/{pid}").as_str(),
        dirflags,
        Mode::empty(),
    )
    .ok()?;
    let under = |t: &std::ffi::OsStr| Path::new(t).starts_with(real);
    let cwd = nix::fcntl::readlinkat(base.as_fd(), "cwd").is_ok_and(|c| under(&c));
    let mut files = Vec::new();
    if let Ok(mut fds) = nix::dir::Dir::openat(base.as_fd(), "fd", dirflags, Mode::empty()) {
        // SAFETY: `fds` stays open for as long as `dfd` is used; iterating it (which needs
        // `&mut`) neither closes nor replaces its descriptor.
        let dfd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fds.as_raw_fd()) };
        for e in fds.iter().flatten() {
            let name = e.file_name();
            if name.to_bytes().starts_with(b".") {
                continue;
            }
            if !nix::fcntl::readlinkat(dfd, name).is_ok_and(|t| under(&t)) {
                continue;
            }
            if let Ok(st) = fstatat(dfd, name, nix::fcntl::AtFlags::empty()) {
                files.push((st.st_dev, st.st_ino));
            }
        }
    }
    (cwd || !files.is_empty()).then_some(Usage { pid, cwd, files })
}

/// The pid `/proc/locks` gives for a granted `FLOCK` on `(dev, ino)`.
pub(super) fn proc_locks_pid(dev: u64, ino: u64) -> Option<u32> {
    let text = std::fs::read_to_string("/proc/locks").ok()?;
    let want = (
        nix::sys::stat::major(dev as nix::libc::dev_t),
        nix::sys::stat::minor(dev as nix::libc::dev_t),
        ino,
    );
    text.lines().find_map(|l| {
        let l = parse_proc_locks_line(l)?;
        (l.flock && !l.blocked && (l.major, l.minor, l.ino) == want).then_some(l.pid)
    })
}

/// One line of `/proc/locks`.
#[derive(Debug, PartialEq, Eq)]
pub struct LockLine {
    pub flock: bool,
    pub blocked: bool,
    pub pid: u32,
    pub major: u64,
    pub minor: u64,
    pub ino: u64,
}

/// `1: FLOCK  ADVISORY  WRITE 4242 fe:00:1234 0 EOF`, or `1: -> FLOCK ...` for a waiter.
/// Device numbers are hex, the inode decimal.
pub fn parse_proc_locks_line(line: &str) -> Option<LockLine> {
    let mut w = line.split_whitespace();
    w.next()?; // "1:"
    let mut kind = w.next()?;
    let blocked = kind == "->";
    if blocked {
        kind = w.next()?;
    }
    let _advisory = w.next()?;
    let _rw = w.next()?;
    let pid: u32 = w.next()?.parse().ok()?;
    let mut id = w.next()?.split(':');
    let major = u64::from_str_radix(id.next()?, 16).ok()?;
    let minor = u64::from_str_radix(id.next()?, 16).ok()?;
    let ino = id.next()?.parse().ok()?;
    Some(LockLine {
        flock: kind == "FLOCK",
        blocked,
        pid,
        major,
        minor,
        ino,
    })
}
