//! The running Claude Code processes ("agents"), on the host and in every container, and whether
//! each one takes the same OAuth refresh lock as the host.
//!
//! Claude Code locks `${realpath(configDir)}.lock` (proper-lockfile's atomic `mkdir`), a sibling
//! of its config dir. Two processes serialise their refreshes only when their config dir is the
//! same directory, its parent is the same directory, and the name is the same: that is where the
//! sibling lock lives. A container that bind-mounts only the config dir (the old
//! `-v …/config:/home/agent/.claude` layout) sees the same files but makes its lock in its own
//! `/home/agent`, so the refreshes race again.
//!
//! Everything is read from the kernel (`/proc`), so no container runtime is needed:
//! - the process is Claude Code by `/proc/PID/exe` (the native `claude` binary) or by its
//!   `cmdline` (node or bun running `@anthropic-ai/claude-code`);
//! - its config dir is `CLAUDE_CONFIG_DIR` from `/proc/PID/environ`, else `$HOME/.claude` (else
//!   the home of its uid in its own `/etc/passwd`), exactly as Claude computes it;
//! - that path is resolved inside the process's own root and mounts, through a directory
//!   descriptor of `/proc/PID/root`: with `openat2(RESOLVE_IN_ROOT)`, so an absolute symlink is
//!   relative to that root and `..` never leaves it, and by a component-by-component walk
//!   (`O_NOFOLLOW` + `readlinkat`) that gives the real path's name (and is the whole resolution
//!   on a kernel without `openat2`);
//! - the identities (`st_dev`, `st_ino`) of the resolved dir and of its parent, and the dir's
//!   name, are compared with the host's config dir.
//!
//! The lock probe (`mkdir` + `rmdir` of a lock-like sibling of the config dir) runs in the
//! agent's view (on the parent directory resolved in its root) with the agent's credentials: a
//! dedicated thread switches its own filesystem uid and gid, supplementary groups and effective
//! capabilities to the agent's (Linux credentials are per thread; the raw syscalls change only
//! the calling thread), does the two calls, and ends. No fork of this (threaded) process, no
//! program run inside the container. The parent's mtime is put back afterwards.

use serde::Serialize;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::libc;
use nix::sys::stat::{fstat, FileStat, Mode};

use crate::pathser::show;

mod root;
pub use root::*;

/// `(st_dev, st_ino)`: what makes two paths the same directory, whatever mounts lead to it.
pub type Id = (u64, u64);

fn id_of(st: &FileStat) -> Id {
    (st.st_dev, st.st_ino)
}

/// The host's side of the comparison: the config dir as the host resolves it.
#[derive(Debug, Clone)]
pub struct Host {
    /// The config dir as given (`CLAUDE_CONFIG_DIR` of the run).
    pub config_dir: PathBuf,
    /// Its real path; the host's lock is this plus `.lock`.
    pub real: PathBuf,
    dir: Id,
    parent: Id,
    /// The factory's shared dir and the home, when known: an agent started with
    /// `CLAUDE_SHARED_DIR`/`CLAUDE_CONFIG_DIR` naming these paths, or a host agent whose `HOME`
    /// is this home, is one of this factory's (see [`Agent::factory`]).
    pub shared_dir: Option<PathBuf>,
    pub home: Option<PathBuf>,
}

impl Host {
    /// Resolve the host's config dir (following symlinks, as Claude's realpath does).
    pub fn read(config_dir: &Path) -> io::Result<Host> {
        let real = fs::canonicalize(config_dir)?;
        let m = fs::metadata(&real)?;
        if !m.is_dir() {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        let parent = real.parent().unwrap_or(Path::new("/"));
        let p = fs::metadata(parent)?;
        Ok(Host {
            config_dir: config_dir.to_path_buf(),
            dir: (m.dev(), m.ino()),
            parent: (p.dev(), p.ino()),
            real,
            shared_dir: None,
            home: None,
        })
    }

    /// `read`, knowing the factory's shared dir and the home too.
    pub fn for_factory(config_dir: &Path, shared_dir: &Path, home: &Path) -> io::Result<Host> {
        let mut h = Host::read(config_dir)?;
        h.shared_dir = Some(shared_dir.to_path_buf());
        h.home = Some(home.to_path_buf());
        Ok(h)
    }

    /// The lock every agent must share: `<real config dir>.lock`.
    pub fn lock(&self) -> PathBuf {
        lock_of(&self.real)
    }

    fn name(&self) -> &OsStr {
        self.real.file_name().unwrap_or_default()
    }
}

fn lock_of(real: &Path) -> PathBuf {
    let mut l = real.as_os_str().to_os_string();
    l.push(".lock");
    PathBuf::from(l)
}

/// What one agent's lock has to do with the host's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Same config dir, same parent, same name: the same `<config>.lock`.
    SharesLock,
    /// The same config dir (same files) reached another way, usually the config dir mounted
    /// without its parent: its lock is somewhere else, so refreshes race.
    LockNotShared,
    /// Another directory altogether (or one that does not exist in its view).
    OtherConfigDir,
    /// Its environment or its root could not be read; `reason` says why.
    CannotRead,
}

impl Verdict {
    pub fn describe(self) -> &'static str {
        match self {
            Verdict::SharesLock => "shares the lock",
            Verdict::LockNotShared => "same files, lock not shared",
            Verdict::OtherConfigDir => "another config dir",
            Verdict::CannotRead => "cannot read",
        }
    }
}

/// Where the agent's config dir path came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Source {
    /// `CLAUDE_CONFIG_DIR` in its environment.
    #[serde(rename = "CLAUDE_CONFIG_DIR")]
    ConfigDirVar,
    /// `$HOME/.claude` of its environment.
    #[serde(rename = "HOME")]
    Home,
    /// No `HOME`: the home of its uid in its own `/etc/passwd`, plus `/.claude`.
    #[serde(rename = "passwd")]
    Passwd,
}

/// A container runtime's id for the process, from `/proc/PID/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Container {
    /// `docker`, `containerd`, `cri-o`, `podman`, or the cgroup directory the id was found in.
    pub runtime: String,
    /// The full 64-hex-digit id.
    pub id: String,
}

/// The `mkdir`/`rmdir` probe's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probe {
    pub ok: bool,
    /// The lock-like directory that was made and removed (in the agent's view).
    pub path: String,
    pub error: Option<String>,
    /// The error number of the failure (not in `--json`: `error` says it for people).
    #[serde(skip)]
    pub errno: Option<i32>,
}

/// One running Claude Code.
#[derive(Debug, Clone, Serialize)]
pub struct Agent {
    pub pid: u32,
    /// Its (filesystem) uid and gid, as this process's user namespace sees them.
    pub uid: u32,
    pub gid: u32,
    pub container: Option<Container>,
    /// In a mount namespace other than ours (a container, `unshare`, a sandbox).
    pub own_mount_namespace: bool,
    /// Its executable, as `/proc/PID/exe` shows it (its `argv[0]` when that cannot be read).
    pub program: String,
    /// The config dir path it computes (in its own view), and from what.
    pub config_dir: Option<String>,
    pub config_dir_from: Option<Source>,
    /// That path resolved in its root (`realpath`), and so its lock `<real>.lock`.
    pub real_config_dir: Option<String>,
    pub lock: Option<String>,
    pub verdict: Verdict,
    /// One sentence: why this verdict.
    pub reason: String,
    /// The lock probe, when it was asked for and the config dir's parent was found.
    pub lock_probe: Option<Probe>,
    /// One of this factory's agents: its config dir holds the host's config files (whatever
    /// the lock), it runs in a container, it was started with `CLAUDE_CONFIG_DIR` or
    /// `CLAUDE_SHARED_DIR` naming this factory's paths, or it is a host Claude whose `HOME` is
    /// this home. The others (another user's or another home's own Claude, a test's) are
    /// listed and warned about, not counted as problems.
    pub factory: bool,
}

/// Every agent found.
#[derive(Debug, Clone, Serialize)]
pub struct Scan {
    pub agents: Vec<Agent>,
}

impl Scan {
    /// Every one of this factory's agents shares the lock.
    pub fn all_share(&self) -> bool {
        self.agents
            .iter()
            .filter(|a| a.factory)
            .all(|a| a.verdict == Verdict::SharesLock)
    }
}

/// Find every Claude Code process and judge it against the host's config dir (`host` is `Err`
/// when the host's own config dir cannot be resolved: every agent is then `cannot-read`).
/// `probe`: also run each agent's lock probe (creates and removes one directory per agent;
/// `status` does not, `verify` does).
pub fn scan(host: &io::Result<Host>, probe: bool) -> Scan {
    let agents = pids()
        .into_iter()
        .filter_map(|pid| inspect(pid, host, probe))
        .collect();
    Scan { agents }
}

/// The pids of the running Claude Code processes (thread-group leaders), ascending. Ours is
/// never one of them.
pub fn pids() -> Vec<u32> {
    let me = std::process::id();
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    // One budget for the whole scan: a process that never settles cannot slow it by more.
    let settle_by = Instant::now() + SETTLE_LIMIT;
    let mut out: Vec<u32> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me && settle(pid, settle_by) && is_claude_pid(pid))
        .filter(|&pid| in_test_world(pid))
        .collect();
    out.sort_unstable();
    out
}

/// Test builds only (the `failpoints` feature): with `DCI_TEST_WORLD=<token>` in our
/// environment, only processes whose `/proc/PID/environ` holds exactly that entry are scanned,
/// so that a test sees its own world's agents and no other Claude Code on the machine. One whose
/// environment we may not read (another user's, and we are not root) is scanned when its
/// `argv[0]` names the world (`…/dci-test-world=<token>/claude`, as the tests start their host
/// agents), and left out otherwise.
#[cfg(feature = "failpoints")]
fn in_test_world(pid: u32) -> bool {
    let Some(token) = std::env::var_os("DCI_TEST_WORLD") else {
        return true;
    };
    let mut want = b"DCI_TEST_WORLD=".to_vec();
    want.extend_from_slice(token.as_bytes());
    match fs::read(proc_path(pid, "environ")) {
        Ok(environ) => environ.split(|&b| b == 0).any(|kv| kv == want.as_slice()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            let mut named = b"/dci-test-world=".to_vec();
            named.extend_from_slice(token.as_bytes());
            named.push(b'/');
            argv_of(pid)
                .first()
                .is_some_and(|a0| a0.windows(named.len()).any(|w| w == named.as_slice()))
        }
        Err(_) => false,
    }
}

/// Release builds: every process is scanned.
#[cfg(not(feature = "failpoints"))]
fn in_test_world(_pid: u32) -> bool {
    true
}

/// How long one scan waits, in all, for processes caught in the middle of `execve`.
const SETTLE_LIMIT: Duration = Duration::from_secs(1);

/// Wait (until `by` at the latest) for a process caught in the middle of `execve` to have its
/// new arguments and environment. Always `true`, so that it can sit in a filter before the
/// reads it protects.
///
/// The kernel points `/proc/PID/exe` at the new program (`begin_new_exec`) before it lays out the
/// new stack (`create_elf_tables`); in between, `/proc/PID/cmdline` and `/proc/PID/environ` read
/// as empty ("Ensure the process spawned far enough to have an environment", fs/proc/base.c).
/// An agent started a moment before a scan was once judged in that instant: no `HOME` seen, so
/// its config dir came from passwd and the verdict was wrong.
fn settle(pid: u32, by: Instant) -> bool {
    while mid_exec(pid) && Instant::now() < by {
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// Is the process in that instant? Zero bytes of `cmdline` from a live user process: a settled
/// one always has at least its `argv[0]`'s NUL. Kernel threads (`PF_KTHREAD` in `stat`'s flags)
/// and zombies also read as empty, and must not be waited for (as another user, whose `exe`
/// we may not read, they would otherwise all look alike).
fn mid_exec(pid: u32) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let Ok(stat) = fs::read(proc_path(pid, "stat")) else {
        return false;
    };
    // "pid (comm) state ppid pgrp session tty_nr tpgid flags …"; comm may hold anything.
    let Some(close) = stat.iter().rposition(|&b| b == b')') else {
        return false;
    };
    let mut fields = stat[close + 1..]
        .split(u8::is_ascii_whitespace)
        .filter(|f| !f.is_empty());
    let state = fields.next();
    let flags = fields
        .nth(5)
        .and_then(|f| std::str::from_utf8(f).ok()?.parse::<u64>().ok());
    let user_process = matches!(state, Some(s) if s != b"Z" && s != b"X")
        && flags.is_some_and(|f| f & PF_KTHREAD == 0);
    user_process && fs::read(proc_path(pid, "cmdline")).is_ok_and(|c| c.is_empty())
}

fn proc_path(pid: u32, what: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{what}"))
}

fn argv_of(pid: u32) -> Vec<Vec<u8>> {
    fs::read(proc_path(pid, "cmdline"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// The process's executable: `/proc/PID/exe`, or, when that may not be read (another user's
/// process and we are not root), its `argv[0]`. `None` for kernel threads and zombies.
fn program_of(pid: u32, argv: &[Vec<u8>]) -> Option<PathBuf> {
    match fs::read_link(proc_path(pid, "exe")) {
        Ok(exe) => Some(exe),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            argv.first().map(|a| PathBuf::from(OsStr::from_bytes(a)))
        }
        Err(_) => None,
    }
}

fn is_claude_pid(pid: u32) -> bool {
    let argv = argv_of(pid);
    let Some(program) = program_of(pid, &argv) else {
        return false;
    };
    let argv: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
    is_claude_code(program.as_os_str().as_bytes(), &argv)
}

fn basename(p: &[u8]) -> &[u8] {
    p.rsplit(|&b| b == b'/').next().unwrap_or(p)
}

/// Is this process Claude Code, by its executable (`/proc/PID/exe`, as the kernel shows it) and
/// its arguments? The native binary is `claude` (npm's `bin/claude.exe`, the platform package's
/// `claude`, the installer's `~/.local/share/claude/versions/<version>`); the older npm package
/// runs `cli.js` under node (or bun), started as `node …/@anthropic-ai/claude-code/cli.js` or
/// through the `claude` shim.
pub fn is_claude_code(exe: &[u8], argv: &[&[u8]]) -> bool {
    let exe = exe.strip_suffix(b" (deleted)").unwrap_or(exe);
    let name = basename(exe);
    let within = |p: &[u8], needle: &[u8]| p.windows(needle.len()).any(|w| w == needle);
    if name == b"claude" || name == b"claude.exe" {
        return true;
    }
    if within(exe, b"/@anthropic-ai/claude-code") || within(exe, b"/claude/versions/") {
        return true;
    }
    let interpreter = name.starts_with(b"node") || name == b"bun" || name == b"nodejs";
    if !interpreter {
        return false;
    }
    // The script is the first argument that is not an option of node's.
    let script = argv.iter().skip(1).find(|a| !a.starts_with(b"-"));
    script.is_some_and(|s| within(s, b"@anthropic-ai/claude-code/") || basename(s) == b"claude")
}

/// The container a process runs in, from the text of `/proc/PID/cgroup`: a 64-hex-digit id in a
/// cgroup path (`docker-<id>.scope`, `/docker/<id>`, `cri-containerd-<id>.scope`,
/// `crio-<id>.scope`, `libpod-<id>.scope`, `/kubepods/…/<id>`). The one parser for both the
/// agent scan and `mounts::scan` (foreign mounts), so the two reports name a container alike.
pub fn container_of(cgroup: &str) -> Option<Container> {
    let hex64 = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    for line in cgroup.lines() {
        let path = line.splitn(3, ':').nth(2).unwrap_or("");
        let segs: Vec<&str> = path.split('/').collect();
        for (i, seg) in segs.iter().enumerate().rev() {
            let s = seg.strip_suffix(".scope").unwrap_or(seg);
            let (prefix, id) = match s.rfind('-') {
                Some(k) if hex64(&s[k + 1..]) => (&s[..k], &s[k + 1..]),
                _ if hex64(s) => ("", s),
                _ => continue,
            };
            let from = if !prefix.is_empty() {
                prefix
            } else if segs.iter().any(|s| s.starts_with("kubepods")) {
                "kubepods"
            } else if i > 0 {
                segs[i - 1]
            } else {
                ""
            };
            let runtime = match from {
                "docker" => "docker",
                "cri-containerd" | "containerd" => "containerd",
                "crio" => "cri-o",
                "libpod" => "podman",
                other if other.starts_with("kubepods") => "kubernetes",
                other => other,
            };
            return Some(Container {
                runtime: runtime.to_string(),
                id: id.to_ascii_lowercase(),
            });
        }
    }
    None
}

/// A process's credentials, from `/proc/PID/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    /// Filesystem uid and gid (what permission checks use).
    pub fsuid: u32,
    pub fsgid: u32,
    pub groups: Vec<u32>,
    /// Effective capabilities (a bit mask).
    pub cap_eff: u64,
}

/// Parse `/proc/PID/status`.
pub fn creds_of(status: &str) -> Option<Creds> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    let ids = |name: &str| -> Option<Vec<u32>> {
        field(name)?
            .split_whitespace()
            .map(|n| n.parse().ok())
            .collect()
    };
    let uid = ids("Uid:")?;
    let gid = ids("Gid:")?;
    Some(Creds {
        fsuid: *uid.get(3)?,
        fsgid: *gid.get(3)?,
        groups: ids("Groups:").unwrap_or_default(),
        cap_eff: u64::from_str_radix(field("CapEff:")?, 16).ok()?,
    })
}

/// Look at one process. `None` when it is not Claude Code or vanished meanwhile.
pub fn inspect(pid: u32, host: &io::Result<Host>, probe: bool) -> Option<Agent> {
    settle(pid, Instant::now() + SETTLE_LIMIT);
    let exe = program_of(pid, &argv_of(pid))?;
    let status = fs::read_to_string(proc_path(pid, "status")).ok()?;
    let creds = creds_of(&status)?;
    let container = fs::read_to_string(proc_path(pid, "cgroup"))
        .ok()
        .and_then(|c| container_of(&c));
    let ns = |p: &Path| fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let own_mount_namespace = match (
        ns(&proc_path(pid, "ns/mnt")),
        ns(Path::new("/proc/self/ns/mnt")),
    ) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    };
    let mut agent = Agent {
        pid,
        uid: creds.fsuid,
        gid: creds.fsgid,
        container,
        own_mount_namespace,
        program: show(&exe),
        config_dir: None,
        config_dir_from: None,
        real_config_dir: None,
        lock: None,
        verdict: Verdict::CannotRead,
        reason: String::new(),
        lock_probe: None,
        factory: false,
    };
    if let Err(reason) = judge(&mut agent, &creds, host, probe) {
        // The process may have exited while we looked: then it is no agent any more.
        program_of(pid, &argv_of(pid))?;
        agent.verdict = Verdict::CannotRead;
        agent.reason = reason;
    }
    agent.factory |= agent.container.is_some()
        || matches!(agent.verdict, Verdict::SharesLock | Verdict::LockNotShared);
    Some(agent)
}

fn err_text(e: &io::Error) -> String {
    let s = e.to_string();
    // "Permission denied (os error 13)" -> "Permission denied"
    match s.find(" (os error") {
        Some(k) => s[..k].to_string(),
        None => s,
    }
}

fn judge(a: &mut Agent, creds: &Creds, host: &io::Result<Host>, probe: bool) -> Result<(), String> {
    let pid = a.pid;
    let environ = fs::read(proc_path(pid, "environ")).map_err(|e| {
        format!(
            "its environment (/proc/{pid}/environ) cannot be read: {}{}",
            err_text(&e),
            if e.kind() == io::ErrorKind::PermissionDenied {
                " (run as root to see every user's agents)"
            } else {
                ""
            }
        )
    })?;
    let root = open_root(pid).map_err(|e| {
        format!(
            "its root directory (/proc/{pid}/root) cannot be opened: {}",
            err_text(&e)
        )
    })?;
    let (path, from) = config_path(&environ, root.as_fd(), a.uid, same_userns(pid))?;
    a.config_dir = Some(show(&path));
    a.config_dir_from = Some(from);
    let host = host
        .as_ref()
        .map_err(|e| format!("the host's config dir cannot be resolved: {}", err_text(e)))?;
    let names = |var: &[u8], p: &Option<PathBuf>| {
        p.as_ref()
            .is_some_and(|p| env_var(&environ, var) == Some(p.as_os_str().as_bytes()))
    };
    a.factory = names(b"CLAUDE_CONFIG_DIR", &Some(host.config_dir.clone()))
        || names(b"CLAUDE_SHARED_DIR", &host.shared_dir)
        || (!a.own_mount_namespace && names(b"HOME", &host.home));
    let r = match resolve_in_root(root.as_fd(), &path) {
        Ok(r) => r,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
            a.verdict = Verdict::OtherConfigDir;
            a.reason = format!(
                "'{}' does not exist in its view ({}): it is not the host's config dir '{}'",
                show(&path),
                err_text(&e),
                show(&host.config_dir)
            );
            return Ok(());
        }
        Err(e) => {
            return Err(format!(
                "'{}' cannot be resolved in its root: {}",
                show(&path),
                err_text(&e)
            ))
        }
    };
    a.real_config_dir = Some(show(&r.real));
    a.lock = Some(show(&lock_of(&r.real)));
    let name = r.real.file_name().unwrap_or_default();
    let own_lock = show(&lock_of(&r.real));
    (a.verdict, a.reason) = if r.dir != host.dir {
        (
            Verdict::OtherConfigDir,
            format!(
                "'{}'{} is another directory than the host's config dir '{}'{}: it keeps its own credentials and takes its own lock",
                show(&path),
                if r.real == path {
                    String::new()
                } else {
                    format!(" (resolved in its view: '{}')", show(&r.real))
                },
                show(&host.config_dir),
                if r.real == host.real {
                    " (the same path, but another directory in its mount namespace)"
                } else {
                    ""
                }
            ),
        )
    } else if r.parent != host.parent {
        (
            Verdict::LockNotShared,
            format!(
                "'{}' holds the same files as the host's config dir, but its parent in that view is another directory{}: it locks '{own_lock}', not the host's '{}', so OAuth refreshes race",
                show(&path),
                if a.own_mount_namespace {
                    " (the config dir is mounted without its parent)"
                } else {
                    ""
                },
                show(&host.lock())
            ),
        )
    } else if name != host.name() {
        (
            Verdict::LockNotShared,
            format!(
                "'{}' is the host's config dir under another name in the same parent (a bind mount): it locks '{own_lock}', not the host's '{}', so OAuth refreshes race",
                show(&path),
                show(&host.lock())
            ),
        )
    } else {
        (
            Verdict::SharesLock,
            format!(
                "'{}' is the host's config dir, reached through the same parent directory: it locks the same '{}'",
                show(&path),
                show(&host.lock())
            ),
        )
    };
    if probe {
        a.lock_probe = probe_lock(&r, creds, pid);
    }
    Ok(())
}

fn same_userns(pid: u32) -> bool {
    let ino = |p: &Path| fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    ino(&proc_path(pid, "ns/user")) == ino(Path::new("/proc/self/ns/user"))
}

/// A descriptor of the process's root directory (in its own mount namespace).
fn open_root(pid: u32) -> io::Result<OwnedFd> {
    let fd = nix::fcntl::open(
        &proc_path(pid, "root"),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    Ok(fd)
}

/// The variable's value in a `/proc/PID/environ` (the first occurrence, as `getenv`).
fn env_var<'a>(environ: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    environ.split(|&b| b == 0).find_map(|kv| {
        kv.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(b"="))
    })
}

/// The config dir path the process computes: `CLAUDE_CONFIG_DIR`, else `$HOME/.claude`, else
/// (no `HOME`) the home of its uid in its own `/etc/passwd` (only when it shares our user
/// namespace, so that its uid means the same).
pub fn config_path(
    environ: &[u8],
    root: BorrowedFd,
    uid: u32,
    same_userns: bool,
) -> Result<(PathBuf, Source), String> {
    let absolute = |v: &[u8], what: &str| -> Result<PathBuf, String> {
        if v.first() == Some(&b'/') {
            Ok(PathBuf::from(OsStr::from_bytes(v)))
        } else {
            Err(format!(
                "its {what} is '{}', not an absolute path: it depends on each process's working directory",
                String::from_utf8_lossy(v)
            ))
        }
    };
    if let Some(v) = env_var(environ, b"CLAUDE_CONFIG_DIR") {
        return Ok((absolute(v, "CLAUDE_CONFIG_DIR")?, Source::ConfigDirVar));
    }
    if let Some(h) = env_var(environ, b"HOME").filter(|h| !h.is_empty()) {
        return Ok((absolute(h, "HOME")?.join(".claude"), Source::Home));
    }
    if !same_userns {
        return Err("it has neither CLAUDE_CONFIG_DIR nor HOME in its environment, and runs in another user namespace: its home cannot be told".into());
    }
    let passwd = read_in_root(root, Path::new("/etc/passwd")).map_err(|e| {
        format!(
            "it has neither CLAUDE_CONFIG_DIR nor HOME in its environment, and its /etc/passwd cannot be read: {}",
            err_text(&e)
        )
    })?;
    let home = passwd.split(|&b| b == b'\n').find_map(|l| {
        let f: Vec<&[u8]> = l.split(|&b| b == b':').collect();
        (f.len() >= 7 && f[2] == uid.to_string().as_bytes()).then(|| f[5].to_vec())
    });
    match home {
        Some(h) => Ok((absolute(&h, "home in /etc/passwd")?.join(".claude"), Source::Passwd)),
        None => Err(format!(
            "it has neither CLAUDE_CONFIG_DIR nor HOME in its environment, and uid {uid} is not in its /etc/passwd"
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// For people: the summary line, one line per agent, and the problems `verify` reports.
// ---------------------------------------------------------------------------------------------

impl Agent {
    /// Where it runs: `docker 0123456789ab`, `own mount namespace`, or `host`.
    pub fn place(&self) -> String {
        match (&self.container, self.own_mount_namespace) {
            (Some(c), _) => format!("{} {}", c.runtime, &c.id[..c.id.len().min(12)]),
            (None, true) => "own mount namespace".into(),
            (None, false) => "host".into(),
        }
    }

    /// One line: `pid 4242 (uid 1000, docker 0123456789ab): shares the lock: <lock>`.
    pub fn line(&self) -> String {
        let what = match (&self.lock, self.verdict) {
            (_, Verdict::CannotRead) => self.reason.clone(),
            (Some(l), _) => format!("{} -> lock {l}", self.config_dir.as_deref().unwrap_or("?")),
            (None, _) => self.config_dir.clone().unwrap_or_default(),
        };
        let probe = match &self.lock_probe {
            Some(p) if !p.ok => format!(
                " (mkdir next to it as uid {} fails: {})",
                self.uid,
                p.error.as_deref().unwrap_or("?")
            ),
            _ => String::new(),
        };
        format!(
            "pid {} (uid {}, {}{}): {}: {what}{probe}",
            self.pid,
            self.uid,
            self.place(),
            if self.factory {
                ""
            } else {
                ", not this factory's"
            },
            self.verdict.describe()
        )
    }
}

impl Scan {
    /// `agents: none running`, `agents: 3 running, all share the lock`, `agents: 3 running,
    /// 1 does not share the lock`.
    pub fn summary(&self) -> String {
        let n = self.agents.iter().filter(|a| a.factory).count();
        let others = self.agents.len() - n;
        let others = match others {
            0 => String::new(),
            1 => " (and 1 other Claude Code on this machine, not this factory's)".into(),
            k => format!(
                " (and {k} other Claude Code processes on this machine, not this factory's)"
            ),
        };
        if n == 0 {
            return if others.is_empty() {
                "agents: none running (no Claude Code process on this machine)".into()
            } else {
                format!("agents: none of this factory's running{others}")
            };
        }
        let not = self
            .agents
            .iter()
            .filter(|a| a.factory && a.verdict != Verdict::SharesLock)
            .count();
        match not {
            0 if n == 1 => format!("agents: 1 running, it shares the lock{others}"),
            0 => format!("agents: {n} running, all share the lock{others}"),
            _ => format!(
                "agents: {n} running, {not} {} not share the lock{others}",
                if not == 1 { "does" } else { "do" }
            ),
        }
    }
}

#[cfg(test)]
mod tests;
