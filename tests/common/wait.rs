//! Real processes for the `--wait` tests: an agent run the way the factory's wrapper runs it
//! (`( flock -w 600 9 || exit 1; claude ... ) 9>"$lock_file"`), and a "container": a
//! long-running process in its own mount namespace with `~/.claude` bind-mounted.
//!
//! Nothing here sleeps to synchronise: every wait is for an event (a marker file written after
//! `flock` returned, a blocked request in `/proc/locks`), polled with a bound.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// Upper bound on any wait for an event in these tests (a loaded machine is slow, not stuck).
pub const EVENT_BOUND: Duration = Duration::from_secs(60);

/// Poll `cond` (every 5 ms) until it returns `Some`, or panic after `EVENT_BOUND`.
#[track_caller]
pub fn wait_until<T>(what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(
            t0.elapsed() < EVENT_BOUND,
            "timed out after {EVENT_BOUND:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `(st_dev, st_ino)` of a path (following links).
pub fn inode(p: &Path) -> (u64, u64) {
    let m = fs::metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
    (m.dev(), m.ino())
}

/// The wrapper's script, with a `claude` stand-in that records what it found once it had the
/// lock, then runs until its stdin has a line or closes.
const AGENT_SCRIPT: &str = r#"
lock_file="${HOME}/.claude/session.lock"
( flock -w 600 9 || exit 1
  eval "${AGENT_WORK:-}"
  # claude stand-in: what it sees the moment it runs.
  {
    echo "pid=$BASHPID"
    echo "lock=$(stat -L -c '%d:%i' /dev/fd/9)"
    if [ -L "$HOME/.claude" ]; then echo "claude=link:$(readlink "$HOME/.claude")"
    elif [ -d "$HOME/.claude" ]; then echo "claude=dir"
    else echo "claude=missing"; fi
    if [ -e "$HOME/.claude/settings.json" ]; then echo "settings=yes"; else echo "settings=no"; fi
  } > "$AGENT_MARK.tmp"
  mv "$AGENT_MARK.tmp" "$AGENT_MARK"
  read -r _ || true
) 9>"$lock_file"
"#;

/// An agent run by the factory's wrapper: `flock -w 600` on `$HOME/.claude/session.lock`, then
/// a `claude` stand-in that writes a marker (outside the home) and runs until released.
/// Killed with its whole process group on drop.
pub struct Agent {
    pub child: Child,
    stdin: Option<ChildStdin>,
    pub mark: PathBuf,
    _scratch: tempfile::TempDir,
}

/// What the agent's `claude` saw once it had the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSaw {
    /// The pid of the wrapper's subshell (the process holding fd 9).
    pub pid: u32,
    /// `(st_dev, st_ino)` of the file its fd 9 locks.
    pub lock: (u64, u64),
    /// `dir`, `link:<target>`, or `missing`.
    pub claude: String,
    /// Whether `~/.claude/settings.json` was reachable.
    pub settings: bool,
}

impl Agent {
    /// Start the wrapper for `home` (it does not wait for the lock: see `wait_locked`).
    pub fn start(home: &Path) -> Agent {
        Agent::start_with(home, "")
    }

    /// The same, its `claude` stand-in first running `work` (shell, e.g. `cd "$HOME/.claude"`)
    /// once it has the lock.
    pub fn start_with(home: &Path, work: &str) -> Agent {
        let scratch = tempfile::Builder::new()
            .prefix("dci-agent.")
            .tempdir_in("/tmp")
            .expect("agent scratch dir");
        let mark = scratch.path().join("claude-started");
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(AGENT_SCRIPT)
            .env("HOME", home)
            .env("AGENT_MARK", &mark)
            .env("AGENT_WORK", work)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn bash for the agent");
        let stdin = child.stdin.take();
        Agent {
            child,
            stdin,
            mark,
            _scratch: scratch,
        }
    }

    /// Start it and wait until its `claude` runs (it holds the lock).
    pub fn holding(home: &Path) -> Agent {
        let a = Agent::start(home);
        a.wait_locked();
        a
    }

    /// What its `claude` saw, once it runs.
    pub fn saw(&self) -> Option<AgentSaw> {
        let text = fs::read_to_string(&self.mark).ok()?;
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
                .map(str::to_string)
        };
        let lock = get("lock")?;
        let (d, i) = lock.split_once(':')?;
        Some(AgentSaw {
            pid: get("pid")?.parse().ok()?,
            lock: (d.parse().ok()?, i.parse().ok()?),
            claude: get("claude")?,
            settings: get("settings")? == "yes",
        })
    }

    /// Wait (bounded) until its `claude` runs, i.e. it has the lock.
    #[track_caller]
    pub fn wait_locked(&self) -> AgentSaw {
        wait_until("the agent to get session.lock", || self.saw())
    }

    /// Let its `claude` finish (it then releases the lock by exiting).
    pub fn release(&mut self) {
        if let Some(mut s) = self.stdin.take() {
            let _ = s.write_all(b"done\n");
        }
    }

    /// Release and wait for the wrapper to exit; its exit code.
    pub fn finish(&mut self) -> i32 {
        self.release();
        self.child
            .wait()
            .expect("wait for agent")
            .code()
            .unwrap_or(-1)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
    }
}

/// Pids `/proc/locks` shows blocked (`->`) on a `FLOCK` of the inode `(dev, ino)`.
pub fn blocked_on(dev: u64, ino: u64) -> Vec<u32> {
    proc_locks(dev, ino, true)
}

/// Pids `/proc/locks` shows holding a `FLOCK` of the inode (the process that called flock(2)).
pub fn granted_to(dev: u64, ino: u64) -> Vec<u32> {
    proc_locks(dev, ino, false)
}

fn proc_locks(dev: u64, ino: u64, blocked: bool) -> Vec<u32> {
    let want = format!(
        "{:02x}:{:02x}:{ino}",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    );
    fs::read_to_string("/proc/locks")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w: Vec<&str> = l.split_whitespace().collect();
            if w.get(1) == Some(&"->") {
                if !blocked {
                    return None;
                }
                w.remove(1);
            } else if blocked {
                return None;
            }
            (w.len() > 5 && w[1] == "FLOCK" && w[5] == want)
                .then(|| w[4].parse().ok())
                .flatten()
        })
        .collect()
}

/// Whether some process holds (not waits for) a `FLOCK` on the inode, by a non-blocking try.
pub fn is_flocked(p: &Path) -> bool {
    let f = fs::File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).is_err()
}

/// A container stand-in: `unshare --mount --propagation private`, `mount --bind SRC DST`, then
/// a long-running process. Killed on drop (the namespace and its mounts go with it).
pub struct Container {
    pub child: Child,
    pub mount_point: PathBuf,
    _scratch: tempfile::TempDir,
}

impl Container {
    /// Bind-mount `src` at `<scratch>/<inside>` in a new mount namespace. `extra` is more shell
    /// run in the namespace before the marker (e.g. another mount). `None` (the test is
    /// recorded as skipped) when not root or when unshare/mount fail.
    pub fn start(src: &Path, inside: &str, extra: &str) -> Option<Container> {
        if !nix::unistd::geteuid().is_root() {
            super::skipped("a mount namespace needs root");
            return None;
        }
        let scratch = tempfile::Builder::new()
            .prefix("dci-ctr.")
            .tempdir_in("/tmp")
            .expect("container scratch dir");
        let mount_point = scratch.path().join(inside.trim_start_matches('/'));
        fs::create_dir_all(&mount_point).expect("mkdir mount point");
        let mark = scratch.path().join("up");
        let err = scratch.path().join("err");
        let script = format!(
            r#"mount --bind "$1" "$2" 2>"$4" || exit 1
{extra}
echo up > "$3"
exec sleep 3600"#
        );
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(script)
            .arg("sh")
            .arg(src)
            .arg(&mount_point)
            .arg(&mark)
            .arg(&err)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                super::skipped(&format!("cannot run unshare: {e}"));
                return None;
            }
        };
        // Up (the marker, and the exec into sleep done: the scan reads its comm; seen as
        // `sh` under load when only the marker was awaited), or exited (unshare or mount
        // failed).
        let t0 = Instant::now();
        let pid = child.id();
        loop {
            let slept = || fs::read(format!("/proc/{pid}/comm")).is_ok_and(|c| c == b"sleep\n");
            if mark.exists() && slept() {
                break;
            }
            if let Ok(Some(st)) = child.try_wait() {
                super::skipped(&format!(
                    "unshare/mount failed ({st}): {}",
                    fs::read_to_string(&err).unwrap_or_default().trim()
                ));
                return None;
            }
            assert!(t0.elapsed() < EVENT_BOUND, "the container never came up");
            std::thread::sleep(Duration::from_millis(5));
        }
        Some(Container {
            child,
            mount_point,
            _scratch: scratch,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
    }
}

/// A cgroup named like a docker container's (`docker-<64 hex>.scope`) in a writable cgroup
/// hierarchy; processes moved into it show that id in `/proc/PID/cgroup`. Removed on drop
/// (after moving its processes back to the root).
pub struct FakeDockerCgroup {
    pub id: String,
    dir: PathBuf,
    root: PathBuf,
}

impl FakeDockerCgroup {
    /// `None` (the test is recorded as skipped) when no cgroup hierarchy can be written here.
    pub fn new() -> Option<FakeDockerCgroup> {
        let id: String = {
            let seed =
                blake3::hash(format!("{}-{:?}", std::process::id(), Instant::now()).as_bytes());
            seed.to_hex().to_string()
        };
        let mi = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut roots: Vec<PathBuf> = Vec::new();
        for l in mi.lines() {
            let Some((left, right)) = l.split_once(" - ") else {
                continue;
            };
            let fstype = right.split(' ').next().unwrap_or("");
            let opts = right.split(' ').nth(2).unwrap_or("");
            let mp = left.split(' ').nth(4).unwrap_or("");
            if fstype == "cgroup2" || (fstype == "cgroup" && opts.split(',').any(|o| o == "pids")) {
                roots.push(PathBuf::from(mp));
            }
        }
        for root in roots {
            let dir = root.join(format!("docker-{id}.scope"));
            if fs::create_dir(&dir).is_ok() {
                return Some(FakeDockerCgroup { id, dir, root });
            }
        }
        super::skipped("no writable cgroup hierarchy (cgroup2, or cgroup v1 pids) found");
        None
    }

    /// Move `pid` into it. False (the test is recorded as skipped) if the kernel refuses.
    pub fn add(&self, pid: u32) -> bool {
        match fs::write(self.dir.join("cgroup.procs"), pid.to_string()) {
            Ok(()) => true,
            Err(e) => {
                super::skipped(&format!(
                    "cannot move pid {pid} into {}: {e}",
                    self.dir.display()
                ));
                false
            }
        }
    }
}

impl Drop for FakeDockerCgroup {
    fn drop(&mut self) {
        if let Ok(procs) = fs::read_to_string(self.dir.join("cgroup.procs")) {
            for p in procs.lines() {
                let _ = fs::write(self.root.join("cgroup.procs"), p);
            }
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

/// `/proc/PID/stat`'s state letter (`R`, `S`, `T` stopped, `t` stopped by a tracer, ...).
pub fn proc_state(pid: u32) -> Option<char> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(')')?
        .1
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// The children of `pid` (its main thread's).
pub fn children(pid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// A child's output, read on threads so that a full pipe never blocks it.
pub struct Output {
    pub child: Child,
    out: Option<std::thread::JoinHandle<Vec<u8>>>,
    err: Option<std::thread::JoinHandle<Vec<u8>>>,
    err_buf: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Output {
    /// Spawn `cmd` with stdout and stderr piped (stdin as the command says).
    pub fn spawn(cmd: &mut Command) -> Output {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
        let read = |mut r: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = r.read_to_end(&mut v);
                v
            })
        };
        let out = child.stdout.take().map(|o| read(Box::new(o)));
        // stderr is collected as it comes, so a test can wait for a line (`stderr_so_far`).
        let err_buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let err = child.stderr.take().map(|mut e| {
            let buf = err_buf.clone();
            std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                loop {
                    match std::io::Read::read(&mut e, &mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.lock().unwrap().extend_from_slice(&chunk[..n]),
                    }
                }
                buf.lock().unwrap().clone()
            })
        });
        Output {
            child,
            out,
            err,
            err_buf,
        }
    }

    /// What it has written to stderr so far.
    pub fn stderr_so_far(&self) -> String {
        String::from_utf8_lossy(&self.err_buf.lock().unwrap()).into_owned()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait (bounded by `EVENT_BOUND`) for it to end: its status, stdout, stderr.
    #[track_caller]
    pub fn finish(mut self) -> (std::process::ExitStatus, String, String) {
        let st = wait_until("the process to end", || self.child.try_wait().unwrap());
        let text = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
            String::from_utf8_lossy(&h.map(|h| h.join().unwrap()).unwrap_or_default()).into_owned()
        };
        let out = text(self.out.take());
        let err = text(self.err.take());
        (st, out, err)
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // Its whole process group when it leads one (strace and the tool it runs).
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            if nix::unistd::getpgid(Some(pid)) == Ok(pid) {
                let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The step `id` in a `--json` document's `steps`; panics, showing the document, when the plan
/// has no such step. The `--wait` tests read the move's `detail` this way.
#[track_caller]
pub fn plan_step<'a>(doc: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    doc["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["id"] == id))
        .unwrap_or_else(|| panic!("no step {id} in {doc:#}"))
}
