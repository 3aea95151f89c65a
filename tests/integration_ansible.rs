//! The fleet integration (issue 4): docs/ansible/migrate-claude-config.yml run for real with
//! `ansible-playbook -i localhost, -c local` against fixture worlds and the built binary.
//!
//! ansible-core comes from PyPI into a virtualenv under the target dir (`target/ansible-venv`),
//! made once and reused. Where PyPI cannot be reached the tests print why and return, except
//! under CI (`CI` set) or with `DCI_REQUIRE_ANSIBLE=1`, where that is a failure.
//!
//! The playbook installs either a bare binary (`dci_binary`, into a directory of the test) or the
//! Debian package (`dci_deb`, with Ansible's `apt` module, into /usr/bin). The package test
//! installs it for real, with apt and dpkg, as root, inside a private mount namespace whose /usr,
//! /etc and /var/{lib,cache,log} are overlays on directories of the test: the machine running the
//! tests is left as it was.

mod common;

use common::*;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use nix::fcntl::{Flock, FlockArg};

/// What pip installs. Bounded above so a future major change cannot break CI unannounced.
const ANSIBLE_REQ: &str = "ansible-core>=2.15,<2.20";

fn playbook() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ansible/migrate-claude-config.yml")
}

/// The cargo target dir (`<target>/debug/disinto-claude-init` -> `<target>`).
fn target_dir() -> PathBuf {
    Path::new(BIN)
        .parent()
        .and_then(Path::parent)
        .expect("binary in <target>/<profile>/")
        .to_path_buf()
}

fn required() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
        || std::env::var_os("DCI_REQUIRE_ANSIBLE").is_some_and(|v| !v.is_empty())
}

/// Run a setup command; Err(reason) when it fails. No wall-clock limit (a loaded machine is
/// slow, not broken): pip bounds its own network waits (`--timeout`, `--retries`).
fn setup_step(cmd: &mut Command, what: &str) -> Result<(), String> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(8).collect();
        Err(format!(
            "{what} failed ({}):\n{}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ))
    }
}

/// `<venv>/bin/ansible-playbook`, making the venv first if needed. Serialised across processes
/// with a lock file; a venv is only reused once it is complete (marker file).
fn make_venv() -> Result<PathBuf, String> {
    let venv = target_dir().join("ansible-venv");
    let marker = venv.join(".dci-ready");
    let playbook_bin = venv.join("bin/ansible-playbook");
    std::fs::create_dir_all(target_dir()).map_err(|e| e.to_string())?;
    let lock_file = File::create(target_dir().join("ansible-venv.lock"))
        .map_err(|e| format!("lock file: {e}"))?;
    let _lock =
        Flock::lock(lock_file, FlockArg::LockExclusive).map_err(|(_, e)| format!("flock: {e}"))?;
    // The marker names the requirement and the venv's own path: a venv's scripts start with
    // `#!<its path>/bin/python`, so one copied or moved with its target dir (a new worktree
    // seeded from another's target/) has an ansible-playbook that cannot start. Rebuilt then.
    let ready = format!("{ANSIBLE_REQ}\n{}\n", venv.display());
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == ready) && playbook_bin.exists() {
        return Ok(playbook_bin);
    }
    let t = Instant::now();
    if venv.exists() {
        std::fs::remove_dir_all(&venv).map_err(|e| format!("remove half-made venv: {e}"))?;
    }
    setup_step(
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
        "python3 -m venv",
    )?;
    setup_step(
        Command::new(venv.join("bin/pip")).args([
            "install",
            "--disable-pip-version-check",
            "--quiet",
            "--timeout",
            "20",
            "--retries",
            "2",
            ANSIBLE_REQ,
        ]),
        "pip install ansible-core",
    )?;
    setup_step(
        Command::new(&playbook_bin).arg("--version"),
        "ansible-playbook --version",
    )?;
    std::fs::write(&marker, &ready).map_err(|e| e.to_string())?;
    eprintln!(
        "made {} with {ANSIBLE_REQ} in {:?}",
        venv.display(),
        t.elapsed()
    );
    Ok(playbook_bin)
}

/// The venv's ansible-playbook, or None (reason printed) when it cannot be had here.
fn ansible() -> Option<&'static PathBuf> {
    static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match VENV.get_or_init(make_venv) {
        Ok(p) => Some(p),
        Err(why) if required() => panic!("ansible-core is required here (CI) but: {why}"),
        Err(why) => {
            skipped(&format!("cannot set up ansible-core from PyPI: {why}"));
            None
        }
    }
}

/// A stdout callback that writes one JSON document (every task result, the stats) to the file
/// named by `DCI_ANSIBLE_RESULT`. ansible-core alone ships no JSON callback (that one lives in
/// the ansible.posix collection, which is not on PyPI on its own).
const CALLBACK: &str = r#"
import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: dci_json
type: stdout
short_description: one JSON document for the disinto-claude-init test suite
description: Records every task result and the stats in the file named by DCI_ANSIBLE_RESULT.
"""


def _get(obj, new, old):
    value = getattr(obj, new, None)
    return value if value is not None else getattr(obj, old)


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "dci_json"

    def __init__(self):
        super().__init__()
        self.tasks = []

    def _add(self, result, failed=False, skipped=False):
        res = _get(result, "result", "_result")
        self.tasks.append({
            "task": _get(result, "task", "_task").get_name(),
            "host": _get(result, "host", "_host").get_name(),
            "changed": bool(res.get("changed", False)),
            "failed": failed,
            "skipped": skipped,
            "msg": res.get("msg"),
            "rc": res.get("rc"),
            "stdout": res.get("stdout"),
        })

    def v2_runner_on_ok(self, result):
        self._add(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._add(result, failed=True)

    def v2_runner_on_skipped(self, result):
        self._add(result, skipped=True)

    def v2_runner_on_unreachable(self, result):
        self._add(result, failed=True)

    def v2_playbook_on_stats(self, stats):
        doc = {
            "tasks": self.tasks,
            "stats": {h: stats.summarize(h) for h in sorted(stats.processed)},
        }
        with open(os.environ["DCI_ANSIBLE_RESULT"], "w") as f:
            json.dump(doc, f, default=str, indent=1)
"#;

/// The outcome of one playbook run, from the callback's document.
struct Play {
    code: i32,
    doc: serde_json::Value,
    raw: String,
}

impl Play {
    fn stats(&self, key: &str) -> i64 {
        self.doc["stats"]["localhost"][key]
            .as_i64()
            .unwrap_or_else(|| panic!("no stats.localhost.{key}:\n{}", self.raw))
    }

    /// The result of the task named `name` (None when the task did not run).
    fn task(&self, name: &str) -> Option<&serde_json::Value> {
        self.doc["tasks"]
            .as_array()?
            .iter()
            .find(|t| t["task"] == name)
    }

    /// A `--check` run on the `legacy` fixture: the plan reported, no migration.
    #[track_caller]
    fn assert_legacy_preview(&self) {
        let plan = self.task(PLAN).expect("plan reported")["msg"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            plan.contains("layout legacy; would run: create-shared-dir, move-config"),
            "{plan}"
        );
        assert!(
            self.task(MIGRATE).is_none_or(|t| t["skipped"] == true),
            "no migration in check mode: {}",
            self.raw
        );
    }

    /// Every failure message of the run.
    fn failures(&self) -> String {
        let mut out = String::new();
        for t in self.doc["tasks"].as_array().into_iter().flatten() {
            if t["failed"] == true {
                out.push_str(t["msg"].as_str().unwrap_or_default());
                out.push('\n');
            }
        }
        out
    }
}

/// A throw-away place for everything Ansible writes (its home, temp dirs, the install dir), kept
/// out of the world so world manifests only see what the tool does.
struct Controller {
    dir: tempfile::TempDir,
    /// The package to install with `dci_deb`; None: install `BIN` with `dci_binary`.
    deb: Option<PathBuf>,
}

/// The host directories apt and dpkg write to. A `Controller` with a package runs the playbook
/// in a private mount namespace where each is an overlay whose upper dir is the controller's
/// (`Controller::upper`), kept across the controller's runs.
const OVERLAID: &[&str] = &["/usr", "/etc", "/var/lib", "/var/cache", "/var/log"];

/// The .deb from scripts/package-deb.sh (tests/common/deb.rs).
fn package() -> &'static Path {
    package_deb()
}

impl Controller {
    fn new() -> Controller {
        let dir = tempfile::Builder::new()
            .prefix("dci-ansible.")
            .tempdir()
            .unwrap();
        for d in ["home", "tmp", "bin", "callbacks"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("callbacks/dci_json.py"), CALLBACK).unwrap();
        Controller { dir, deb: None }
    }

    /// A controller that installs the package with `dci_deb` (needs root: apt, mounts).
    fn with_package() -> Controller {
        assert!(
            is_root(),
            "this test installs the package with apt in a private mount namespace: it needs root"
        );
        let mut c = Controller::new();
        c.deb = Some(package().to_path_buf());
        for d in OVERLAID {
            std::fs::create_dir_all(c.upper(d)).unwrap();
            std::fs::create_dir_all(c.upper(d).with_file_name("work")).unwrap();
        }
        c
    }

    /// Where the writes to the host directory `host_dir` (one of `OVERLAID`) went.
    fn upper(&self, host_dir: &str) -> PathBuf {
        self.dir
            .path()
            .join("overlay")
            .join(host_dir.trim_start_matches('/').replace('/', "-"))
            .join("upper")
    }

    fn install_dir(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    fn tmp(&self) -> PathBuf {
        self.dir.path().join("tmp")
    }

    /// A real run on a migrated box with the tool already installed: exit 0, changed=0, the
    /// migration task unchanged, the world untouched.
    #[track_caller]
    fn run_changes_nothing(&self, ansible_playbook: &Path, w: &World) -> Play {
        let migrated = w.manifest();
        let p = self.run(ansible_playbook, w, false);
        assert_eq!(p.code, 0, "{}", p.raw);
        assert_eq!(p.stats("changed"), 0, "{}", p.raw);
        assert_eq!(p.task(MIGRATE).unwrap()["changed"], false);
        assert_same(&migrated, &w.manifest(), "second run");
        p
    }

    fn run(&self, ansible_playbook: &Path, w: &World, check: bool) -> Play {
        let mut vars = serde_json::json!({
            "dci_hosts": "all",
            "dci_install_dir": self.install_dir(),
            "dci_home": w.home,
            "dci_shared_dir": w.shared,
            "dci_env_file": w.env_file,
            "dci_profile": w.profile,
            "ansible_python_interpreter": ansible_playbook.with_file_name("python"),
        });
        let mut c = match &self.deb {
            None => {
                vars["dci_binary"] = BIN.into();
                Command::new(ansible_playbook)
            }
            Some(deb) => {
                vars["dci_deb"] = deb.to_str().expect("a UTF-8 path").into();
                let mut script = String::from("set -e\n");
                for d in OVERLAID {
                    let upper = self.upper(d);
                    script.push_str(&format!(
                        "mount -t overlay dci-overlay -o 'lowerdir={d},upperdir={},workdir={}' {d}\n",
                        upper.display(),
                        upper.with_file_name("work").display()
                    ));
                }
                script.push_str("exec \"$@\"\n");
                let mut c = Command::new("unshare");
                c.args(["--mount", "--propagation", "private", "--"])
                    .args(["sh", "-c", &script, "sh"])
                    .arg(ansible_playbook);
                c
            }
        };
        let vars_file = self.dir.path().join("vars.json");
        std::fs::write(&vars_file, vars.to_string()).unwrap();
        c.args(["-i", "localhost,", "-c", "local"])
            .arg("-e")
            .arg(format!("@{}", vars_file.display()))
            .arg(playbook());
        if check {
            c.arg("--check");
        }
        let home = self.dir.path().join("home");
        let result_file = self.dir.path().join("result.json");
        let _ = std::fs::remove_file(&result_file);
        c.env_clear()
            // root's PATH on Debian: dpkg (under apt) refuses to run without ldconfig, in sbin.
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOME", &home)
            .env("LANG", "C.UTF-8")
            .env("TMPDIR", self.tmp())
            .env("ANSIBLE_HOME", home.join(".ansible"))
            .env("ANSIBLE_LOCAL_TEMP", self.tmp())
            .env("ANSIBLE_REMOTE_TEMP", self.tmp())
            .env(
                "ANSIBLE_CALLBACK_PLUGINS",
                self.dir.path().join("callbacks"),
            )
            .env("ANSIBLE_STDOUT_CALLBACK", "dci_json")
            .env("DCI_ANSIBLE_RESULT", &result_file)
            .env("ANSIBLE_NOCOWS", "1")
            .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
            .env("ANSIBLE_LOCALHOST_WARNING", "false")
            .env("ANSIBLE_INVENTORY_UNPARSED_WARNING", "false")
            .env("ANSIBLE_DEPRECATION_WARNINGS", "false");
        let t = Instant::now();
        let r = run(&mut c);
        eprintln!(
            "ansible-playbook{} took {:?} (exit {})",
            if check { " --check" } else { "" },
            t.elapsed(),
            r.code
        );
        let text = std::fs::read_to_string(&result_file).unwrap_or_default();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "ansible-playbook exit {}: no result document ({e})\nstdout:\n{}\nstderr:\n{}",
                r.code, r.stdout, r.stderr
            )
        });
        Play {
            code: r.code,
            raw: format!("{text}\nstdout:\n{}\nstderr:\n{}", r.stdout, r.stderr),
            doc,
        }
    }

    /// Nothing of the check-mode staging may be left in the temp dir.
    fn assert_no_staging_left(&self) {
        let left: Vec<_> = std::fs::read_dir(self.tmp())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().ends_with(".dci"))
            .collect();
        assert!(left.is_empty(), "staging dirs left behind: {left:?}");
    }
}

const PLAN: &str = "Report the plan";
const MIGRATE: &str = "Migrate (disinto-claude-init --yes --json)";
const INSTALL: &str = "Install disinto-claude-init";

/// The world is migrated: the tool's view, and the bytes.
#[track_caller]
fn assert_migrated(w: &World, claude_before: &Manifest) {
    let (code, doc) = run_json(w.cmd_sub("status").arg("--json"));
    assert_eq!((code, doc["layout"].as_str()), (0, Some("migrated")));
    let v = run(&mut w.cmd_sub("verify"));
    assert_eq!(v.code, 0, "verify: {}\n{}", v.stdout, v.stderr);
    assert_eq!(std::fs::read_link(w.claude()).unwrap(), w.config);
    assert_config_holds(claude_before, &w.config, "config dir vs the old ~/.claude");
    let env = std::fs::read_to_string(&w.env_file).unwrap();
    assert!(
        env.contains(&format!("\nCLAUDE_CONFIG_DIR={}\n", w.config.display())),
        "{env}"
    );
}

#[test]
fn check_then_migrate_then_idempotent() {
    let Some(ap) = ansible() else { return };
    let ctl = Controller::new();
    let w = fixture_with_env("legacy");
    let claude_before = manifest(&w.claude());
    let world_before = w.manifest();

    // --check: reports the plan, installs nothing, changes nothing.
    let p = ctl.run(ap, &w, true);
    assert_eq!(p.code, 0, "{}", p.raw);
    assert_eq!(p.stats("failures"), 0, "{}", p.raw);
    p.assert_legacy_preview();
    assert_eq!(p.task(INSTALL).unwrap()["changed"], true, "would install");
    assert_same(&world_before, &w.manifest(), "--check run");
    assert!(
        manifest(&ctl.install_dir()).len() == 1,
        "--check installed something"
    );
    ctl.assert_no_staging_left();

    // First real run: installs, migrates, reports changed.
    let p = ctl.run(ap, &w, false);
    assert_eq!(p.code, 0, "{}", p.raw);
    assert_eq!(p.task(MIGRATE).unwrap()["changed"], true, "{}", p.raw);
    assert_eq!(p.task(INSTALL).unwrap()["changed"], true);
    assert_eq!(p.stats("changed"), 2, "install + migrate: {}", p.raw);
    assert_eq!(
        mode_of(&ctl.install_dir().join("disinto-claude-init")),
        0o755
    );
    assert_migrated(&w, &claude_before);

    // Second run: changed=0, nothing touched.
    let migrated = w.manifest();
    ctl.run_changes_nothing(ap, &w);

    // --check on the migrated box: nothing to change.
    let p = ctl.run(ap, &w, true);
    assert_eq!(p.code, 0, "{}", p.raw);
    assert_eq!(p.stats("changed"), 0, "{}", p.raw);
    let plan = p.task(PLAN).unwrap()["msg"].as_str().unwrap().to_string();
    assert!(
        plan.contains("layout migrated; nothing to change"),
        "{plan}"
    );
    assert_same(&migrated, &w.manifest(), "--check on a migrated box");
    ctl.assert_no_staging_left();
}

#[test]
fn conflict_fails_the_play_with_the_tools_message() {
    let Some(ap) = ansible() else { return };
    let ctl = Controller::new();
    let w = fixture_with_env("conflict");
    let before = w.manifest();
    for check in [true, false] {
        let p = ctl.run(ap, &w, check);
        assert_eq!(
            p.code, 2,
            "ansible-playbook exits 2 on a failed host\n{}",
            p.raw
        );
        assert_eq!(p.stats("failures"), 1, "{}", p.raw);
        let msg = p.failures();
        assert!(
            msg.contains("disinto-claude-init exited 3 (refused"),
            "{msg}\n{}",
            p.raw
        );
        assert!(msg.contains("hold files"), "the tool's message: {msg}");
        assert!(
            msg.contains("fix: keep the shared one"),
            "the tool's fix: {msg}"
        );
        assert!(
            p.task(MIGRATE).is_none(),
            "stopped before migrating: {}",
            p.raw
        );
        assert_same(&before, &w.manifest(), "conflict");
        ctl.assert_no_staging_left();
    }
}

#[test]
fn verify_problem_fails_the_host_with_each_problem_and_fix() {
    // The preview passes; the migration runs and its final verify finds a stale OAuth refresh
    // lock next to the config dir (the tool fixes loose credentials itself since issue 11):
    // exit 5 through failed_when, re-raised with the tool's problems.
    let Some(ap) = ansible() else { return };
    let ctl = Controller::new();
    let w = fixture_with_env("legacy");
    let lock = w.shared.join("config.lock");
    mkdir(&lock, 0o755);
    set_mtime(&lock, 1_600_000_000, 0);
    let p = ctl.run(ap, &w, false);
    assert_eq!(p.code, 2, "{}", p.raw);
    assert_eq!(p.task(MIGRATE).unwrap()["rc"], 5, "{}", p.raw);
    let msg = p.failures();
    assert!(msg.contains("exited 5 (verify found problems)"), "{msg}");
    assert!(
        msg.contains("config.lock' is")
            && msg.contains("a stale OAuth refresh lock")
            && msg.contains("fix: make sure no Claude is running"),
        "{msg}"
    );
    assert_eq!(p.stats("rescued"), 1, "{}", p.raw);
}

const INSTALL_DEB: &str = "Install the disinto-claude-init package";

/// The package path (`dci_deb`): apt installs the .deb for real (in the overlays), the installed
/// /usr/bin/disinto-claude-init migrates, a second run changes nothing.
#[test]
fn installs_the_package_with_apt_then_migrates() {
    let Some(ap) = ansible() else { return };
    let ctl = Controller::with_package();
    let w = fixture_with_env("legacy");
    let claude_before = manifest(&w.claude());
    let world_before = w.manifest();
    let host_bin = Path::new("/usr/bin/disinto-claude-init");
    let host_had_it = host_bin.exists();
    let installed = ctl.upper("/usr").join("bin/disinto-claude-init");
    let dpkg_status = ctl.upper("/var/lib").join("dpkg/status");
    let registered = || {
        std::fs::read_to_string(&dpkg_status)
            .unwrap_or_default()
            .contains("Package: disinto-claude-init\nStatus: install ok installed\n")
    };

    // --check: apt says it would install; the preview runs from the unpacked package.
    let p = ctl.run(ap, &w, true);
    assert_eq!(p.code, 0, "{}", p.raw);
    assert_eq!(p.task(INSTALL_DEB).unwrap()["changed"], true, "{}", p.raw);
    assert!(
        p.task(INSTALL).is_none_or(|t| t["skipped"] == true),
        "no bare binary copied: {}",
        p.raw
    );
    p.assert_legacy_preview();
    assert_same(&world_before, &w.manifest(), "--check run");
    assert!(!installed.exists(), "--check installed the binary");
    assert!(!registered(), "--check installed the package");
    ctl.assert_no_staging_left();

    // First real run: apt installs the package, its binary migrates.
    let p = ctl.run(ap, &w, false);
    assert_eq!(p.code, 0, "{}", p.raw);
    assert_eq!(p.task(INSTALL_DEB).unwrap()["changed"], true, "{}", p.raw);
    assert_eq!(p.task(MIGRATE).unwrap()["changed"], true, "{}", p.raw);
    assert_eq!(p.stats("changed"), 2, "install + migrate: {}", p.raw);
    assert!(registered(), "dpkg does not list the package as installed");
    assert_eq!(mode_of(&installed), 0o755);
    let v = run(Command::new(&installed).arg("--version"));
    assert_eq!(
        v.stdout.trim(),
        format!("disinto-claude-init {}", env!("CARGO_PKG_VERSION"))
    );
    assert!(ctl
        .upper("/usr")
        .join("share/man/man1/disinto-claude-init.1.gz")
        .is_file());
    assert_migrated(&w, &claude_before);
    ctl.assert_no_staging_left();

    // Second run: the same version is installed, the box is migrated: changed=0.
    let p = ctl.run_changes_nothing(ap, &w);
    assert_eq!(p.task(INSTALL_DEB).unwrap()["changed"], false);

    // All of it happened in the overlays.
    assert_eq!(
        host_bin.exists(),
        host_had_it,
        "the host's /usr/bin changed"
    );
}
