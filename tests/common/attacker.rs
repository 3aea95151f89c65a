//! The adversarial harness of issue 10: a real unprivileged user racing real root runs.
//!
//! - [`users`]: two uids with no passwd entry (U, the home's owner and attacker; V, another
//!   user). Their processes run through `setpriv --reuid --regid --clear-groups`, so the kernel
//!   gives them exactly the rights of a stranger on the box and nothing else.
//! - [`Canaries`]: a root-owned tree (`$R`) next to the world: files, directories, a root-only
//!   0700 directory and 0600 files holding a unique token. Its full manifest (owners, modes,
//!   mtimes, bytes) is taken when planted and compared after the run.
//! - [`assert_token_unreadable`]: after the run, U reads every file it can under the world
//!   (`grep -r` as U, so "can read" is decided by the kernel, not by us) and must not find the
//!   token. A positive control in the same scan proves the scan reads files at all.
//! - [`Paused`]: the binary started with `DCI_FAILPOINTS=<point>=pause`; it stops at the point
//!   until the test has done its swap (see `src/failpoint.rs`), so every race is deterministic.
//!
//! Root only: without root these helpers return None and record the skip (`skipped`: a failure
//! under `CI=true`).

use super::*;
use std::process::{Child, Output};

/// A local user with no privileges and no passwd entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
}

/// The first free uid at or above `from` (no passwd entry, no group with that gid).
fn free_id(from: u32) -> u32 {
    (from..from + 5000)
        .find(|&id| {
            nix::unistd::User::from_uid(id.into())
                .ok()
                .flatten()
                .is_none()
                && nix::unistd::Group::from_gid(id.into())
                    .ok()
                    .flatten()
                    .is_none()
        })
        .expect("a free uid")
}

/// (U, V): two distinct unprivileged users. None (with the reason on stderr) unless we are root
/// and `setpriv` works.
pub fn users() -> Option<(User, User)> {
    if !is_root() {
        skipped("the adversarial tests need root (they run the tool as root against an unprivileged user)");
        return None;
    }
    let a = free_id(61_000);
    let b = free_id(a + 1);
    let u = User { uid: a, gid: a };
    let v = User { uid: b, gid: b };
    match Command::new("setpriv")
        .args([
            format!("--reuid={}", u.uid),
            format!("--regid={}", u.gid),
            "--clear-groups".into(),
            "true".into(),
        ])
        .status()
    {
        Ok(s) if s.success() => Some((u, v)),
        other => {
            skipped(&format!("setpriv does not work here: {other:?}"));
            None
        }
    }
}

impl User {
    /// `bash -c 'set -eu; <script>'` as this user (environment cleared but for PATH and
    /// HOME=/nonexistent, cwd `/`).
    pub fn sh(&self, script: &str) -> Output {
        Command::new("setpriv")
            .args([
                format!("--reuid={}", self.uid),
                format!("--regid={}", self.gid),
                "--clear-groups".into(),
                "bash".into(),
                "-c".into(),
                format!("set -eu\n{script}"),
            ])
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", "/nonexistent")
            .env("LANG", "C.UTF-8")
            .current_dir("/")
            .stdin(Stdio::null())
            .output()
            .expect("run setpriv")
    }

    /// [`sh`](Self::sh), panicking (with its output) unless it succeeds: an attack that silently
    /// failed would make its test pass for nothing.
    #[track_caller]
    pub fn must(&self, script: &str) -> String {
        let o = self.sh(script);
        assert!(
            o.status.success(),
            "as uid {}: {script}\nexit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.uid,
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `chown -R --no-dereference` of `path` to this user (done by root: setting up a home).
    pub fn give(&self, path: &Path) {
        let ok = Command::new("chown")
            .args(["-R", "--no-dereference"])
            .arg(format!("{}:{}", self.uid, self.gid))
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "chown -R {} {}", self.uid, path.display());
    }
}

/// Single-quote a path for a bash script.
pub fn q(p: &Path) -> String {
    let s = p.as_os_str().as_bytes();
    let mut out = String::from("'");
    for &b in s {
        if b == b'\'' {
            out.push_str("'\\''");
        } else {
            out.push(b as char);
        }
    }
    out.push('\'');
    out
}

/// A root-owned tree an attacker would like the tool to touch for them.
pub struct Canaries {
    /// `$R`, root 0755.
    pub root: PathBuf,
    /// The unique secret in every root-only file of `$R`.
    pub token: String,
    /// In a world-readable file of `$R`: the scan's positive control.
    pub public: String,
    before: Manifest,
}

impl Canaries {
    /// `$R/...`, directly under `dir` (which must exist):
    ///
    /// ```text
    /// R/                      0755   secret (0600, token), public (0644)
    /// R/etc/profile.d/z.sh    0755 dirs, 0644 file          (findings 1, 2)
    /// R/etc2/{passwd,shadow}  non-empty; shadow 0600, token (findings 8, 9)
    /// R/important/a/...       files                         (finding 1)
    /// R/victim/b/{c/,f*}      a tree of files               (finding 4)
    /// R/nest/sub/token        nest 0755, sub 0700, token 0600 (finding 3)
    /// R/state/                empty                         (state dir through a link)
    /// R/empty/                empty
    /// ```
    pub fn plant(dir: &Path) -> Canaries {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let token = format!("CANARY-TOKEN-{}-{n}-{}", std::process::id(), dir.display())
            .replace(['/', ' ', '.'], "_");
        let public = token.replace("CANARY-TOKEN", "CANARY-PUBLIC");
        let r = dir.join("R");
        mkdir(&r, 0o755);
        write_file(
            &r.join("secret"),
            format!("API_KEY={token}\n").as_bytes(),
            0o600,
        );
        write_file(&r.join("public"), format!("{public}\n").as_bytes(), 0o644);
        write_file(&r.join("etc/profile.d/z.sh"), b"export Z=1\n", 0o644);
        write_file(
            &r.join("etc2/passwd"),
            b"root:x:0:0::/root:/bin/bash\n",
            0o644,
        );
        write_file(
            &r.join("etc2/shadow"),
            format!("root:{token}:19000::::::\n").as_bytes(),
            0o600,
        );
        for i in 0..5 {
            write_file(
                &r.join(format!("important/a/f{i}")),
                format!("important {i}\n").as_bytes(),
                0o644,
            );
            write_file(
                &r.join(format!("victim/b/f{i}")),
                format!("victim {i}\n").as_bytes(),
                0o644,
            );
            write_file(
                &r.join(format!("victim/b/c/g{i}")),
                format!("victim deep {i}\n").as_bytes(),
                0o644,
            );
        }
        write_file(
            &r.join("nest/sub/token"),
            format!("API_KEY={token}\n").as_bytes(),
            0o600,
        );
        set_mode(&r.join("nest/sub"), 0o700);
        mkdir(&r.join("state"), 0o755);
        mkdir(&r.join("empty"), 0o755);
        let mut c = 0;
        stamp_tree(&r, &mut c);
        Canaries {
            before: manifest(&r),
            root: r,
            token,
            public,
        }
    }

    /// The canary tree exactly as planted: nothing added, removed, re-owned, re-moded,
    /// rewritten or re-timed.
    #[track_caller]
    pub fn assert_intact(&self) {
        assert_same(
            &self.before,
            &manifest(&self.root),
            &format!("the root-owned canaries at {}", self.root.display()),
        );
    }

    /// `$R/<rel>`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

/// Every file `user` can read under `roots` (what the kernel lets them read: the scan runs as
/// them), searched for `token`: none may hold it. `public` must be found by the same scan
/// (its positive control: a scan that reads nothing would pass anything).
#[track_caller]
pub fn assert_token_unreadable(user: &User, roots: &[&Path], c: &Canaries) {
    let scan = |needle: &str| -> Vec<String> {
        let dirs: Vec<String> = roots.iter().map(|r| q(r)).collect();
        // -D skip: never open a fifo or device (a fifo would block the scan).
        let o = user.sh(&format!(
            "grep -r -l -s -a -F -D skip -e '{needle}' -- {} || true",
            dirs.join(" ")
        ));
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let control = scan(&c.public);
    assert!(
        control.iter().any(|l| l.ends_with("/R/public")),
        "the scan as uid {} did not even find the public canary: {control:?}",
        user.uid
    );
    let leaked = scan(&c.token);
    assert!(
        leaked.is_empty(),
        "uid {} can read the root-only token in: {leaked:#?}",
        user.uid
    );
}

/// Regular files and directories under `root` writable by others (symlinks excluded: their mode
/// means nothing). The shared dir's sticky-free 0755 and every file the tool makes must not be.
pub fn world_writable(root: &Path) -> Vec<String> {
    manifest(root)
        .into_iter()
        .filter(|(_, n)| n.kind != Kind::Symlink && n.mode & 0o002 != 0)
        .map(|(k, n)| format!("{}: {n}", esc(&k)))
        .collect()
}

/// The binary running with pause points (`DCI_FAILPOINTS=<p>=pause,...`).
pub struct Paused {
    /// None once [`Paused::finish`] took its output.
    child: Option<Collecting>,
    dir: TempDir,
}

/// Start `cmd` with each of `points` set to pause. Wait for one with [`Paused::reached`].
pub fn spawn_paused(cmd: &mut Command, points: &[&str]) -> Paused {
    let dir = tempfile::Builder::new()
        .prefix("dci-pause.")
        .tempdir()
        .expect("pause dir");
    let spec: Vec<String> = points.iter().map(|p| format!("{p}=pause")).collect();
    let child = Collecting::spawn(
        cmd.env("DCI_FAILPOINTS", spec.join(","))
            .env("DCI_FAILPOINT_DIR", dir.path()),
    );
    Paused {
        child: Some(child),
        dir,
    }
}

impl Paused {
    fn proc(&mut self) -> &mut Child {
        &mut self.child.as_mut().expect("not finished").child
    }

    /// Wait until the binary stands at `point` (true), or has exited without reaching it
    /// (false). Panics after `RUN_TIMEOUT`.
    pub fn reached(&mut self, point: &str) -> bool {
        let flag = self.dir.path().join(format!("{point}.reached"));
        let start = Instant::now();
        loop {
            if flag.exists() {
                return true;
            }
            if self.proc().try_wait().expect("wait").is_some() {
                return flag.exists();
            }
            if start.elapsed() > RUN_TIMEOUT {
                let _ = self.proc().kill();
                panic!("the binary never reached failpoint {point}");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// [`reached`](Self::reached), or a panic with the run's exit status and output when the
    /// binary ended without reaching `point`.
    #[track_caller]
    pub fn must_reach(&mut self, point: &str) {
        if self.reached(point) {
            return;
        }
        let status = self.proc().wait().expect("wait");
        let (stdout, stderr) = self.child.take().expect("not finished").output();
        panic!("the binary ended ({status}) without reaching {point}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    }

    /// Let the binary go on past `point`.
    pub fn release(&self, point: &str) {
        fs::write(self.dir.path().join(format!("{point}.release")), b"go").expect("release");
    }

    /// Release every point still closed and wait for the binary to exit.
    pub fn finish(mut self, points: &[&str]) -> Run {
        for p in points {
            self.release(p);
        }
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.proc().try_wait().expect("wait") {
                break s;
            }
            if start.elapsed() > RUN_TIMEOUT {
                let _ = self.proc().kill();
                let _ = self.proc().wait();
                panic!("the paused binary did not finish within {RUN_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let (stdout, stderr) = self.child.take().expect("not finished").output();
        let code = match (status.code(), status.signal()) {
            (Some(c), _) => c,
            (None, sig) => panic!("killed by signal {sig:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"),
        };
        Run {
            code,
            stdout,
            stderr,
        }
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        // A test that panicked half way must not leave a paused root process behind.
        if let Some(c) = self.child.as_mut() {
            if let Ok(None) = c.child.try_wait() {
                let _ = c.child.kill();
                let _ = c.child.wait();
            }
        }
    }
}

/// A run that must have succeeded (exit 0), with its output when not.
#[track_caller]
pub fn ok(r: &Run, what: &str) {
    assert_eq!(
        r.code, 0,
        "{what}\nstdout:\n{}\nstderr:\n{}",
        r.stdout, r.stderr
    );
}

/// Under attack a run may fail (1), be refused (3), or report an undo it could not finish (6),
/// saying why; it must not die of a signal (`finish` panics then).
#[track_caller]
pub fn ended(r: &Run) {
    assert!(
        [0, 1, 3, 6].contains(&r.code),
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        r.code,
        r.stdout,
        r.stderr
    );
    if r.code != 0 {
        assert!(!r.stderr.trim().is_empty(), "exit {} said nothing", r.code);
    }
}
