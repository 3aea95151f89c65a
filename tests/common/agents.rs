//! Real Claude Code agents for the tests: the pinned npm package (installed by `common::npm`
//! into a cache under `target/`), and long-running `claude mcp serve` processes (stdin held open), on the host or in
//! "containers": new mount namespaces (`unshare --mount --fork`) whose root is a tmpfs with bind
//! mounts of `/usr`, `/etc`, `/dev`, a fresh `/proc`, the Claude binary, and whatever the test
//! mounts, entered with `chroot` as the agent's uid.
//!
//! Independent of the crate under test, like the rest of `common`: std, `tempfile`, `nix`.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::World;

/// The Claude Code release the tests run (the npm package `@anthropic-ai/claude-code`).
pub const CLAUDE_CODE_VERSION: &str = "2.1.197";

/// How long an agent may take to show up in /proc (a bound, not a synchronisation).
pub const START_TIMEOUT: Duration = Duration::from_secs(120);

fn npm_platform_package() -> Option<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => Some("claude-code-linux-x64"),
        "aarch64" => Some("claude-code-linux-arm64"),
        _ => None,
    }
}

/// The native `claude` binary of the pinned release, installed by `common::npm` (pinned, under
/// `target/tmp/npm`, nothing global): the platform package's `claude` (what npm's `bin/claude.exe`
/// is a link of). Panics when it cannot be had (a failed install fails the test; only
/// `DCI_SKIP_REAL_CLIENTS=1`, checked by the caller with `npm::require_real_clients`, skips).
pub fn claude_binary() -> PathBuf {
    let pkg = super::npm::install("@anthropic-ai/claude-code", CLAUDE_CODE_VERSION);
    let platform = npm_platform_package().map(|p| {
        pkg.prefix
            .join("node_modules/@anthropic-ai")
            .join(p)
            .join("claude")
    });
    match platform.filter(|p| p.is_file()) {
        Some(p) => p,
        None => fs::canonicalize(pkg.bin("claude")).unwrap_or_else(|e| {
            panic!(
                "no claude binary in {} ({e}) for {}",
                pkg.prefix.display(),
                std::env::consts::ARCH
            )
        }),
    }
}

/// Is this pid running `claude` yet (its exe is the binary), rather than the shell or chroot
/// that starts it?
fn runs_claude(pid: u32, bin_name: &OsStr) -> bool {
    fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|e| e.file_name().map(|n| n == bin_name))
        .unwrap_or(false)
}

/// Wait (polling, bounded) until `pid` is claude and has started up: it answered an MCP
/// `initialize` sent on `stdin` (its answer lands in `log`). Claude Code writes its config
/// (`.claude.json` and its backup, `settings.json`, the lock dirs beside them) while it starts,
/// before that answer: a test that compared the world before and after a command, with an agent
/// still starting, saw the agent's own writes.
fn wait_until_ready(pid: u32, bin: &Path, stdin: &mut ChildStdin, log: &Path) {
    let start = Instant::now();
    let name = bin.file_name().unwrap();
    let waited = |what: &str| {
        if start.elapsed() > START_TIMEOUT || !Path::new(&format!("/proc/{pid}")).exists() {
            panic!(
                "pid {pid} ({}) did not {what} within {START_TIMEOUT:?}; its output:\n{}",
                bin.display(),
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // An agent scanned the instant after its exec, before the kernel has laid out its
    // environment, is the tool's to wait for (`agents::settle`), not ours.
    while !runs_claude(pid, name) {
        waited("become claude");
    }
    stdin
        .write_all(INITIALIZE)
        .and_then(|()| stdin.flush())
        .unwrap_or_else(|e| panic!("initialize to pid {pid}: {e}"));
    while !fs::read(log).is_ok_and(|out| contains(&out, b"\"serverInfo\"")) {
        waited("answer initialize");
    }
}

/// An MCP `initialize` request, one line of JSON-RPC.
const INITIALIZE: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"dci-tests","version":"1"}}}
"#;

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// One running `claude mcp serve`, its stdin held open. Killed (SIGKILL, by its pid) on drop.
pub struct Agent {
    pub pid: u32,
    /// The uid it runs as.
    pub uid: u32,
    /// Its mount namespace's root (a tmpfs inside the namespace; this is the empty host dir it
    /// is mounted on). `None` for a host agent.
    pub container: Option<TempDir>,
    _stdin: ChildStdin,
    child: Child,
    _log: TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        // The child is claude itself (host) or `unshare`, which reaps claude and then exits:
        // waiting for it means claude is gone from /proc (and from its cgroup) afterwards.
        let _ = self.child.wait();
    }
}

fn log_dir() -> (TempDir, PathBuf) {
    let d = tempfile::Builder::new()
        .prefix("dci-agent-log.")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let p = d.path().join("out");
    (d, p)
}

/// `claude mcp serve` on the host, as root, with exactly `env` plus `DCI_TEST_WORLD=<w's
/// token>` as its environment and `/dci-test-world=<token>/claude` as its `argv[0]` (only `w`'s
/// runs of the binary see it, as root or not).
pub fn start_host(w: &World, bin: &Path, env: &[(&str, &OsStr)]) -> Agent {
    let (logd, log) = log_dir();
    let mut c = Command::new(bin);
    // argv[0] names the world too: a scan that may not read a root process's environment (run
    // as another user) still tells this world's agent from another suite's.
    let mut arg0 = OsString::from("/dci-test-world=");
    arg0.push(w.token());
    arg0.push("/claude");
    std::os::unix::process::CommandExt::arg0(&mut c, arg0);
    c.args(["mcp", "serve"]).env_clear();
    for (k, v) in env {
        c.env(k, v);
    }
    c.env("DCI_TEST_WORLD", w.token());
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(fs::File::create(&log).unwrap())
        .stderr(fs::File::create(log.with_extension("err")).unwrap())
        .spawn()
        .expect("spawn claude");
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    wait_until_ready(pid, bin, &mut stdin, &log);
    Agent {
        pid,
        uid: 0,
        container: None,
        _stdin: stdin,
        child,
        _log: logd,
    }
}

/// A "container": `claude mcp serve` in a new mount namespace whose root has `/usr` (and the
/// merged-usr links), `/etc`, `/dev`, `/proc`, the binary at `/opt/claude/`, an empty `/tmp`,
/// `/home/agent` (owned by `uid`), and each `(host dir, path inside)` of `binds` bind-mounted;
/// then `setup` (shell code, `$root` is the new root as the host sees it, `$uid` the uid), and
/// `claude` run as `uid:uid` with exactly `env` plus `DCI_TEST_WORLD=<w's token>` (only `w`'s
/// runs of the binary see it).
pub fn start_container(
    w: &World,
    bin: &Path,
    uid: u32,
    binds: &[(&Path, &Path)],
    setup: &str,
    env: &[(&str, &OsStr)],
) -> Agent {
    let root = tempfile::Builder::new()
        .prefix("dci-container.")
        .tempdir_in("/tmp")
        .expect("tempdir for the container's root");
    let (logd, log) = log_dir();
    let pidfile = logd.path().join("pid");
    let script = r#"
set -eu
root=$1; pidfile=$2; bindir=$3; uid=$4; setup=$5; shift 5
mount -t tmpfs -o size=4m,mode=0755 none "$root"
mkdir -p "$root/usr" "$root/etc" "$root/dev" "$root/proc" "$root/tmp" "$root/opt/claude" "$root/home/agent"
chmod 1777 "$root/tmp"
chown "$uid:$uid" "$root/home/agent"
for l in bin sbin lib lib64; do
    if [ -L "/$l" ]; then ln -s "$(readlink "/$l")" "$root/$l"; fi
done
mount --bind /usr "$root/usr"
mount --bind /etc "$root/etc"
mount --bind /dev "$root/dev"
mount -t proc proc "$root/proc"
mount --bind "$bindir" "$root/opt/claude"
while [ "$1" != "--" ]; do
    mkdir -p "$root$2"
    mount --bind "$1" "$root$2"
    shift 2
done
shift
eval "$setup"
echo $$ > "$pidfile"
exec chroot --userspec="$uid:$uid" "$root" env -i "$@"
"#;
    let mut c = Command::new("unshare");
    c.args([
        "--mount",
        "--propagation",
        "private",
        "--fork",
        "--",
        "sh",
        "-c",
        script,
        "sh",
    ])
    .arg(root.path())
    .arg(&pidfile)
    .arg(bin.parent().unwrap())
    .arg(uid.to_string())
    .arg(setup);
    for (host, inside) in binds {
        c.arg(host).arg(inside);
    }
    c.arg("--");
    for (k, v) in env {
        let mut kv = OsString::from(k);
        kv.push("=");
        kv.push(v);
        c.arg(kv);
    }
    let mut kv = OsString::from("DCI_TEST_WORLD=");
    kv.push(w.token());
    c.arg(kv);
    c.arg(Path::new("/opt/claude").join(bin.file_name().unwrap()))
        .args(["mcp", "serve"])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(fs::File::create(&log).unwrap())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn unshare");
    // The shell writes its pid just before it execs chroot, env and claude in that process.
    let start = Instant::now();
    let pid: u32 = loop {
        if let Ok(s) = fs::read_to_string(&pidfile) {
            if let Ok(p) = s.trim().parse() {
                break p;
            }
        }
        if let Some(st) = child.try_wait().unwrap() {
            let mut out = String::new();
            let _ = fs::File::open(&log).and_then(|mut f| f.read_to_string(&mut out));
            panic!("the container's setup exited ({st}) before starting claude:\n{out}");
        }
        assert!(
            start.elapsed() < START_TIMEOUT,
            "no pid from the container's setup within {START_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdin = child.stdin.take().unwrap();
    wait_until_ready(pid, bin, &mut stdin, &log);
    Agent {
        pid,
        uid,
        container: Some(root),
        _stdin: stdin,
        child,
        _log: logd,
    }
}

/// Run `sh -c script` inside `pid`'s mount namespace and root, as `uid` (nsenter: the kernel's
/// own view of that process, not the crate's resolution). Returns (exit code, stdout, stderr).
pub fn in_view(pid: u32, uid: u32, script: &str, args: &[&OsStr]) -> (i32, String, String) {
    let o = Command::new("nsenter")
        .arg("--target")
        .arg(pid.to_string())
        .args(["--mount", "--root", "--wd=/"])
        .arg(format!("--setuid={uid}"))
        .arg(format!("--setgid={uid}"))
        .args(["sh", "-c", script, "sh"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run nsenter");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// What Claude's lock is in `pid`'s view: `realpath(config_dir)` + `.lock`, by coreutils'
/// `realpath` run inside that view.
pub fn lock_in_view(pid: u32, uid: u32, config_dir: &Path) -> PathBuf {
    let (code, out, err) = in_view(
        pid,
        uid,
        r#"printf '%s.lock' "$(realpath -e "$1")""#,
        &[config_dir.as_os_str()],
    );
    assert_eq!(
        code,
        0,
        "realpath of {} in pid {pid}'s view: {err}",
        config_dir.display()
    );
    PathBuf::from(OsStr::from_bytes(out.as_bytes()))
}

/// `mkdir lock` in `pid`'s view as `uid`: Ok(()) made it, Err(stderr) did not (EEXIST: "File
/// exists").
pub fn mkdir_in_view(pid: u32, uid: u32, lock: &Path) -> Result<(), String> {
    let (code, _, err) = in_view(pid, uid, r#"mkdir "$1""#, &[lock.as_os_str()]);
    if code == 0 {
        Ok(())
    } else {
        Err(err)
    }
}

/// `rmdir lock` in `pid`'s view (as root), ignoring a missing one.
pub fn rmdir_in_view(pid: u32, lock: &Path) {
    let (code, _, err) = in_view(
        pid,
        0,
        r#"[ ! -d "$1" ] || rmdir "$1""#,
        &[lock.as_os_str()],
    );
    assert_eq!(
        code,
        0,
        "rmdir {} in pid {pid}'s view: {err}",
        lock.display()
    );
}

/// A cgroup named like Docker's (`docker-<64 hex>.scope`) in a writable cgroup hierarchy of
/// this machine, for `/proc/PID/cgroup` to show a container id. Removed on drop (after the
/// processes put in it are gone: declare it before them).
pub struct DockerCgroup {
    pub id: String,
    dirs: Vec<PathBuf>,
}

impl DockerCgroup {
    /// `None` (with the reason on stderr) when no hierarchy can be written here.
    pub fn new() -> Option<DockerCgroup> {
        let id: String = format!("{:016x}", std::process::id())
            .repeat(4)
            .chars()
            .take(64)
            .collect();
        for h in [
            "/sys/fs/cgroup/pids",
            "/sys/fs/cgroup/unified",
            "/sys/fs/cgroup",
        ] {
            let h = Path::new(h);
            if !h.join("cgroup.procs").exists() {
                continue;
            }
            let parent = h.join(format!("dci-test.{}", std::process::id()));
            let dir = parent.join(format!("docker-{id}.scope"));
            if fs::create_dir_all(&dir).is_ok() {
                return Some(DockerCgroup {
                    id,
                    dirs: vec![dir, parent],
                });
            }
        }
        eprintln!("note: no writable cgroup hierarchy here: container ids are not checked on a real cgroup");
        None
    }

    /// Move `pid` into it.
    pub fn add(&self, pid: u32) {
        fs::write(self.dirs[0].join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("move {pid} into {}: {e}", self.dirs[0].display()));
    }
}

impl Drop for DockerCgroup {
    fn drop(&mut self) {
        for d in &self.dirs {
            if let Err(e) = fs::remove_dir(d) {
                eprintln!("rmdir {}: {e}", d.display());
            }
        }
    }
}
