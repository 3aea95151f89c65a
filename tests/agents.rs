//! Issue 15: every running Claude Code, on the host and in each container, takes the same lock.
//!
//! Real agents (`claude mcp serve` of the pinned npm release, stdin held open) in real mount
//! namespaces with their own root, standing in for containers; each verdict of
//! `disinto_claude_init::agents` is checked against what actually happens when the agents'
//! views race `mkdir` of their lock paths (computed by coreutils' `realpath` inside each view,
//! entered with `nsenter`, not by the crate).

mod common;

use common::agents::{
    claude_binary, lock_in_view, mkdir_in_view, rmdir_in_view, start_container, start_host, Agent,
    DockerCgroup,
};
use common::npm::require_real_clients;
use common::*;
use disinto_claude_init::agents::{self as dci, Verdict};
use std::ffi::OsStr;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Scans see every agent on the machine: the tests that start agents run one at a time.
static AGENTS: Mutex<()> = Mutex::new(());

/// The preamble of every test here that starts real agents: root (`why` says what for), the
/// real Claude Code from npm (else a visible skip, never a pass), and the `AGENTS` lock held for
/// the whole test. Gives the binary and the lock's guard. A macro because a skip returns from
/// the test.
macro_rules! real_agents {
    ($why:literal) => {{
        if !is_root() {
            skip!($why);
        }
        if !require_real_clients("Claude Code") {
            skip!("DCI_SKIP_REAL_CLIENTS=1: needs the real Claude Code from npm");
        }
        (
            claude_binary(),
            AGENTS.lock().unwrap_or_else(|e| e.into_inner()),
        )
    }};
}

/// The uid the containers run Claude as (the factory's default agent uid).
const AGENT_UID: u32 = 1000;

fn chown(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid)).expect("chown");
}

/// The environment of Claude in a container: `PATH`, and `HOME` at `/home/agent`.
fn agent_env() -> [(&'static str, &'static OsStr); 2] {
    [
        ("PATH", OsStr::new("/usr/bin:/bin")),
        ("HOME", OsStr::new("/home/agent")),
    ]
}

/// The factory's agent: a container with the whole shared dir at the same path and
/// `CLAUDE_CONFIG_DIR` set, as `AGENT_UID`; `setup` as for `start_container`.
fn start_factory_agent(w: &World, bin: &Path, setup: &str) -> Agent {
    let mut env = agent_env().to_vec();
    env.push(("CLAUDE_CONFIG_DIR", w.config.as_os_str()));
    start_container(w, bin, AGENT_UID, &[(&w.shared, &w.shared)], setup, &env)
}

/// The old layout: a container with only the config dir, at `/home/agent/.claude`, and no
/// `CLAUDE_CONFIG_DIR`.
fn start_old_layout_agent(w: &World, bin: &Path) -> Agent {
    let home_claude = Path::new("/home/agent/.claude");
    start_container(
        w,
        bin,
        AGENT_UID,
        &[(&w.config, home_claude)],
        "",
        &agent_env(),
    )
}

/// A container with `other` (an unrelated directory) as its `~/.claude`, and `env`.
fn start_other_config_agent(w: &World, bin: &Path, other: &Path, env: &[(&str, &OsStr)]) -> Agent {
    let home_claude = Path::new("/home/agent/.claude");
    start_container(w, bin, AGENT_UID, &[(other, home_claude)], "", env)
}

/// Claude on the host as root, through `~/.claude` (a link to the config dir), without
/// `CLAUDE_CONFIG_DIR`.
fn start_host_agent(w: &World, bin: &Path) -> Agent {
    start_host(
        w,
        bin,
        &[
            ("PATH", OsStr::new("/usr/bin:/bin")),
            ("HOME", w.home.as_os_str()),
        ],
    )
}

/// A directory unrelated to the migration, the agents' uid's, to mount as a `~/.claude`.
fn other_config_dir() -> tempfile::TempDir {
    let other = tempfile::Builder::new()
        .prefix("dci-other-config.")
        .tempdir_in("/tmp")
        .unwrap();
    chown(other.path(), AGENT_UID);
    other
}

/// A migrated machine by hand: the shared dir and the config dir (0700) owned by the agents'
/// uid, `~/.claude` a link to the config dir, a credentials file.
fn migrated_world() -> World {
    let w = World::new();
    mkdir(&w.shared, 0o755);
    mkdir(&w.config, 0o700);
    write_file(
        &w.config.join(".credentials.json"),
        b"{\"claudeAiOauth\":{}}",
        0o600,
    );
    for p in [&w.shared, &w.config, &w.config.join(".credentials.json")] {
        chown(p, AGENT_UID);
    }
    ln_s(&w.config, &w.claude());
    w
}

fn host(w: &World) -> std::io::Result<dci::Host> {
    dci::Host::read(&w.config)
}

fn find(scan: &dci::Scan, pid: u32) -> &dci::Agent {
    scan.agents
        .iter()
        .find(|a| a.pid == pid)
        .unwrap_or_else(|| panic!("pid {pid} not among the agents found: {:#?}", scan.agents))
}

/// What the kernel says, independently of the crate: the lock each agent computes
/// (`realpath` in its view), made with `mkdir` in its view, then the host's lock made on the
/// host. Shared lock: the host's mkdir fails with EEXIST. Returns whether it did.
fn host_mkdir_collides(a: &Agent, config_in_view: &Path, host_lock: &Path) -> bool {
    let lock = lock_in_view(a.pid, a.uid, config_in_view);
    mkdir_in_view(a.pid, a.uid, &lock).unwrap_or_else(|e| {
        panic!(
            "mkdir {} as uid {} in pid {}'s view: {e}",
            lock.display(),
            a.uid,
            a.pid
        )
    });
    let second = fs::create_dir(host_lock);
    let collided = match &second {
        Ok(()) => false,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => true,
        Err(e) => panic!("mkdir {}: {e}", host_lock.display()),
    };
    rmdir_in_view(a.pid, &lock);
    if second.is_ok() {
        fs::remove_dir(host_lock).unwrap();
    }
    collided
}

/// Two agents race `mkdir` of their own lock paths: does the second fail with EEXIST?
fn agents_collide(x: &Agent, x_cfg: &Path, y: &Agent, y_cfg: &Path) -> bool {
    let lx = lock_in_view(x.pid, x.uid, x_cfg);
    let ly = lock_in_view(y.pid, y.uid, y_cfg);
    mkdir_in_view(x.pid, x.uid, &lx).expect("first mkdir");
    let second = mkdir_in_view(y.pid, y.uid, &ly);
    rmdir_in_view(x.pid, &lx);
    match second {
        Ok(()) => {
            rmdir_in_view(y.pid, &ly);
            false
        }
        Err(e) if e.contains("File exists") => true,
        Err(e) => panic!("second mkdir in pid {}'s view: {e}", y.pid),
    }
}

#[test]
fn four_agents_four_verdicts_each_matching_a_real_mkdir_race() {
    let (bin, _serial) = real_agents!("needs root (mount namespaces, chroot, other users' /proc)");
    // Declared before the agents, so removed after they are gone.
    let cgroup = DockerCgroup::new();
    let w = migrated_world();
    let other = other_config_dir();
    let home_claude = Path::new("/home/agent/.claude");

    // a) the whole shared dir at the same path, CLAUDE_CONFIG_DIR set.
    let a = start_factory_agent(&w, &bin, "");
    if let Some(cg) = &cgroup {
        cg.add(a.pid);
    }
    // b) the old layout: only the config dir, at /home/agent/.claude, no CLAUDE_CONFIG_DIR.
    let b = start_old_layout_agent(&w, &bin);
    // c) an unrelated directory as its ~/.claude.
    let c = start_other_config_agent(&w, &bin, other.path(), &agent_env());
    // d) on the host, through ~/.claude (a link to the config dir), without the variable.
    let d = start_host_agent(&w, &bin);

    let before = w.manifest();
    let inside_b = manifest(&PathBuf::from(format!("/proc/{}/root/home/agent", b.pid)));
    let scan = dci::scan(&host(&w), true);
    assert_same(
        &before,
        &w.manifest(),
        "the world after a scan with lock probes",
    );
    assert_same(
        &inside_b,
        &manifest(&PathBuf::from(format!("/proc/{}/root/home/agent", b.pid))),
        "b's /home/agent after its probe",
    );

    let cases: [(&Agent, &Path, Verdict); 4] = [
        (&a, &w.config, Verdict::SharesLock),
        (&b, home_claude, Verdict::LockNotShared),
        (&c, home_claude, Verdict::OtherConfigDir),
        (&d, &w.claude(), Verdict::SharesLock),
    ];
    let host_lock = {
        let mut l = fs::canonicalize(&w.config).unwrap().into_os_string();
        l.push(".lock");
        PathBuf::from(l)
    };
    for (agent, cfg, want) in cases {
        let got = find(&scan, agent.pid);
        assert_eq!(got.verdict, want, "pid {}: {got:#?}", agent.pid);
        assert_eq!(got.uid, agent.uid, "{got:#?}");
        // c runs in no container and names none of the factory's paths: not the factory's
        // (`Host::read` knows no shared dir or home). The others hold its files or run in a
        // (docker-named) cgroup.
        assert_eq!(got.factory, want != Verdict::OtherConfigDir, "{got:#?}");
        if let Some(cg) = cgroup.as_ref().filter(|_| std::ptr::eq(agent, &a)) {
            let c = got.container.as_ref().expect("a's container id");
            assert_eq!(
                (c.runtime.as_str(), c.id.as_str()),
                ("docker", cg.id.as_str())
            );
        } else {
            assert_eq!(got.container, None, "{got:#?}");
        }
        assert_eq!(
            got.own_mount_namespace,
            agent.container.is_some(),
            "{got:#?}"
        );
        assert_eq!(
            got.config_dir.as_deref(),
            Some(&*cfg.to_string_lossy()),
            "{got:#?}"
        );
        let from = if cfg == w.config {
            dci::Source::ConfigDirVar
        } else {
            dci::Source::Home
        };
        assert_eq!(got.config_dir_from, Some(from), "{got:#?}");
        // The lock it reports is the one the kernel resolves in its view.
        let lock = lock_in_view(agent.pid, agent.uid, cfg);
        assert_eq!(
            got.lock.as_deref(),
            Some(&*lock.to_string_lossy()),
            "{got:#?}"
        );
        let probe = got.lock_probe.as_ref().expect("a probe was asked for");
        assert!(probe.ok, "the lock probe of pid {}: {probe:?}", agent.pid);
        // The verdict is what happens when its lock and the host's are made.
        let collided = host_mkdir_collides(agent, cfg, &host_lock);
        assert_eq!(
            collided,
            want == Verdict::SharesLock,
            "pid {} ({want:?}): the host's mkdir {} collided: {collided}",
            agent.pid,
            host_lock.display()
        );
    }
    // And between the agents' own views: a and d serialise; b races both; c races everyone.
    for (x, xc, y, yc, want) in [
        (&a, &*w.config, &d, &*w.claude(), true),
        (&d, &*w.claude(), &a, &*w.config, true),
        (&a, &*w.config, &b, home_claude, false),
        (&b, home_claude, &d, &*w.claude(), false),
        (&b, home_claude, &c, home_claude, false),
    ] {
        assert_eq!(
            agents_collide(x, xc, y, yc),
            want,
            "mkdir of the lock in pid {}'s view, then in pid {}'s",
            x.pid,
            y.pid
        );
    }
}

/// Symlinks inside a container are resolved in the container: a link whose absolute target is
/// the host's config dir path names, in that container, whatever is at that path there; and
/// the lock is decided by directory identity, not by the path's spelling.
#[test]
fn links_resolve_inside_the_container_and_identity_decides() {
    let (bin, _serial) = real_agents!("needs root (mount namespaces, chroot, other users' /proc)");
    let w = migrated_world();
    let env = agent_env();
    let cfg = w.config.to_str().unwrap();
    // e) ~/.claude -> the host's config dir path, which in this container is a local directory
    //    (the shared dir is mounted elsewhere): followed on the host's side it would "share".
    let e = start_container(
        &w,
        &bin,
        AGENT_UID,
        &[(&w.shared, Path::new("/mnt/shared"))],
        &format!(
            "mkdir -p \"$root{cfg}\"; chown $uid \"$root{cfg}\" \"$(dirname \"$root{cfg}\")\"; ln -s '{cfg}' \"$root/home/agent/.claude\""
        ),
        &env,
    );
    // f) ~/.claude -> /mnt/shared/config, the shared dir mounted at another path: another
    //    spelling, but the same directory in the same parent, so the same lock directory.
    let f = start_container(
        &w,
        &bin,
        AGENT_UID,
        &[(&w.shared, Path::new("/mnt/shared"))],
        "ln -s /mnt/shared/config \"$root/home/agent/.claude\"",
        &env,
    );
    // g) the shared dir at the same path, and the config dir bind-mounted again under another
    //    name in it: the same directory in the same parent, but the lock is '<alias>.lock'.
    let alias = w.shared.join("alias");
    mkdir(&alias, 0o700);
    chown(&alias, AGENT_UID);
    let g = start_container(
        &w,
        &bin,
        AGENT_UID,
        &[(&w.shared, &w.shared), (&w.config, &alias)],
        &format!("ln -s '{}' \"$root/home/agent/.claude\"", alias.display()),
        &env,
    );
    let home_claude = Path::new("/home/agent/.claude");
    let before = w.manifest();
    let scan = dci::scan(&host(&w), true);
    assert_same(&before, &w.manifest(), "the world after the scan");
    let host_lock = PathBuf::from(format!("{cfg}.lock"));
    for (agent, want, real) in [
        (&e, Verdict::OtherConfigDir, cfg.to_string()),
        (&f, Verdict::SharesLock, "/mnt/shared/config".to_string()),
        (
            &g,
            Verdict::LockNotShared,
            alias.to_str().unwrap().to_string(),
        ),
    ] {
        let got = find(&scan, agent.pid);
        assert_eq!(got.verdict, want, "{got:#?}");
        assert_eq!(
            got.real_config_dir.as_deref(),
            Some(real.as_str()),
            "{got:#?}"
        );
        assert!(got.lock_probe.as_ref().is_some_and(|p| p.ok), "{got:#?}");
        assert_eq!(
            host_mkdir_collides(agent, home_claude, &host_lock),
            want == Verdict::SharesLock,
            "pid {} ({want:?})",
            agent.pid
        );
    }
}

/// A scan with lock probes changes nothing and still judges `agent` as sharing the lock, but
/// its probe fails with `error`: what the agent itself gets making its lock in its own view.
#[track_caller]
fn probe_fails_like_the_agent(w: &World, agent: &Agent, error: &str, what: &str) {
    let before = w.manifest();
    let scan = dci::scan(&host(w), true);
    assert_same(&before, &w.manifest(), &format!("the world after {what}"));
    let got = find(&scan, agent.pid);
    assert_eq!(got.verdict, Verdict::SharesLock, "{got:#?}");
    let probe = got.lock_probe.as_ref().unwrap();
    assert!(!probe.ok, "{probe:?}");
    assert_eq!(probe.error.as_deref(), Some(error), "{probe:?}");
    let lock = lock_in_view(agent.pid, AGENT_UID, &w.config);
    let e = mkdir_in_view(agent.pid, AGENT_UID, &lock)
        .expect_err("the agent's own mkdir of its lock succeeded");
    assert!(e.contains(error), "{e}");
}

#[test]
fn the_probe_runs_as_the_agent_and_fails_where_it_could_not_lock() {
    let (bin, _serial) = real_agents!("needs root");
    let w = migrated_world();
    // The shared dir belongs to root now, 0755: root could make the lock, uid 1000 cannot.
    chown(&w.shared, 0);
    let a = start_factory_agent(&w, &bin, "");
    probe_fails_like_the_agent(&w, &a, "Permission denied", "a failed probe");
    // Without the probe nothing is made at all.
    let scan = dci::scan(&host(&w), false);
    assert!(find(&scan, a.pid).lock_probe.is_none());
    drop(a);

    // The shared dir the agent's again, but mounted read-only in the container (`:ro`): the
    // same directory, so the same lock, which it cannot take there. Root on the host could.
    chown(&w.shared, AGENT_UID);
    let shared = w.shared.to_str().unwrap();
    let r = start_factory_agent(
        &w,
        &bin,
        &format!("mount -o remount,bind,ro \"$root{shared}\""),
    );
    probe_fails_like_the_agent(
        &w,
        &r,
        "Read-only file system",
        "a probe on a read-only mount",
    );
    // verify: a problem, with the fix for a read-only mount.
    let (code, doc) = run_json(w.cmd_sub("verify").arg("--json"));
    assert_eq!(code, 5, "{doc:#}");
    assert_schema_valid("verify, an agent that cannot lock", &doc);
    let p = doc["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "agent-lock-mkdir-fails")
        .unwrap_or_else(|| panic!("no agent-lock-mkdir-fails: {doc:#}"));
    assert!(
        p["message"]
            .as_str()
            .unwrap()
            .contains(&format!("pid {} ", r.pid)),
        "{p:#}"
    );
    assert!(p["fix"].as_str().unwrap().contains("read-write"), "{p:#}");
    // The host's own view of the same directory is writable.
    fs::create_dir(format!("{shared}/config.dci-test")).unwrap();
    fs::remove_dir(format!("{shared}/config.dci-test")).unwrap();
}

#[test]
fn agents_that_exit_are_not_listed() {
    let (bin, _serial) = real_agents!("needs root");
    let w = migrated_world();
    let d = start_host_agent(&w, &bin);
    let pid = d.pid;
    assert!(dci::pids().contains(&pid));
    drop(d);
    // Dropping kills and reaps it: the pid is gone from /proc, and from the scan.
    assert!(!dci::pids().contains(&pid));
    assert!(dci::scan(&host(&w), false)
        .agents
        .iter()
        .all(|a| a.pid != pid));
}

/// The resolution inside a root, on a real tree: absolute links are relative to that root,
/// `..` never leaves it, loops end, and the kernel (`openat2`) and the walk agree.
#[test]
fn resolution_stays_inside_the_root() {
    let t = tempfile::Builder::new()
        .prefix("dci-root.")
        .tempdir_in("/tmp")
        .unwrap();
    let r = fs::canonicalize(t.path()).unwrap();
    mkdir(&r.join("etc"), 0o755);
    mkdir(&r.join("srv"), 0o755);
    mkdir(&r.join("srv/config"), 0o700);
    mkdir(&r.join("home"), 0o755);
    mkdir(&r.join("home/u"), 0o755);
    symlink("/etc", r.join("abs")).unwrap(); // the host has an /etc too: must not be it
    symlink("../../../../../../etc", r.join("up")).unwrap();
    symlink("/srv/config", r.join("home/u/.claude")).unwrap();
    symlink("../srv/./config/", r.join("home/rel")).unwrap();
    symlink("loop", r.join("loop")).unwrap();
    write_file(&r.join("file"), b"x", 0o644);
    let root = fs::File::open(&r).unwrap();
    let id = |p: &Path| {
        let m = fs::metadata(p).unwrap();
        (m.dev(), m.ino())
    };
    for (path, real, dir, parent) in [
        ("/abs", "/etc", r.join("etc"), r.clone()),
        ("/up", "/etc", r.join("etc"), r.clone()),
        ("/abs/../../..", "/", r.clone(), r.clone()),
        (
            "/home/u/.claude",
            "/srv/config",
            r.join("srv/config"),
            r.join("srv"),
        ),
        ("/home/u/.claude/..", "/srv", r.join("srv"), r.clone()),
        (
            "home/rel",
            "/srv/config",
            r.join("srv/config"),
            r.join("srv"),
        ),
        (
            "/home/u/../u/.claude/",
            "/srv/config",
            r.join("srv/config"),
            r.join("srv"),
        ),
    ] {
        let got = dci::resolve_in_root(root.as_fd(), Path::new(path))
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(got.real, Path::new(real), "{path}");
        assert_eq!(got.dir, id(&dir), "{path}");
        assert_eq!(got.parent, id(&parent), "{path}");
        let walked = dci::walk_in_root(root.as_fd(), Path::new(path)).unwrap();
        let last = walked.last().map(|(fd, _)| {
            let m = nix::sys::stat::fstat(fd).unwrap();
            (m.st_dev, m.st_ino)
        });
        assert_eq!(last.unwrap_or(id(&r)), id(&dir), "walk of {path}");
    }
    for (path, errno) in [
        ("/loop", nix::libc::ELOOP),
        ("/file", nix::libc::ENOTDIR),
        ("/file/x", nix::libc::ENOTDIR),
        ("/nope", nix::libc::ENOENT),
    ] {
        let e = dci::resolve_in_root(root.as_fd(), Path::new(path))
            .err()
            .unwrap_or_else(|| panic!("{path} resolved"));
        assert_eq!(e.raw_os_error(), Some(errno), "{path}: {e}");
    }
}

/// Validate a `--json` document against docs/json-schema.json.
#[track_caller]
fn assert_schema_valid(what: &str, doc: &serde_json::Value) {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/json-schema.json");
    let schema: serde_json::Value = serde_json::from_str(&fs::read_to_string(p).unwrap()).unwrap();
    let v = jsonschema::draft202012::new(&schema).unwrap();
    let errs: Vec<String> = v
        .iter_errors(doc)
        .map(|e| format!("at {}: {e}", e.instance_path()))
        .collect();
    assert!(errs.is_empty(), "{what}: {}\n{doc:#}", errs.join("\n"));
}

/// A realistic home of uid 1000 (the agents' uid), migrated by the real binary.
fn really_migrated_world() -> World {
    let w = World::realistic();
    let out = std::process::Command::new("chown")
        .args(["-R", "--no-dereference", "1000:1000"])
        .arg(&w.home)
        .output()
        .unwrap();
    assert!(out.status.success(), "chown -R: {out:?}");
    let r = run(w.cmd().arg("--yes"));
    assert_eq!(r.code, 0, "migrate: {}\n{}", r.stdout, r.stderr);
    w
}

/// `verify --json` run as uid 1000 with `groups` (a `setpriv` option), in a clean environment:
/// the world's env file is root's (0600), so `--no-env-file`; and `DCI_TEST_WORLD` (as uid 1000
/// it cannot read root's environ: root's agents of this world are told by their `argv[0]`, and
/// listed as cannot-read; another suite's agents are not seen).
fn verify_as_uid_1000(w: &World, groups: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--reuid=1000", "--regid=1000", groups, "--"])
        .arg(w.cmd_sub("verify").get_program())
        .args(w.cmd_sub("verify").get_args())
        // A later option wins.
        .args(["--no-env-file", "--json"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", &w.home)
        .env("DCI_TEST_WORLD", w.token());
    cmd
}

/// `verify --json` exits 0 and lists no agent; its document.
#[track_caller]
fn verify_lists_no_agents(w: &World, what: &str) -> serde_json::Value {
    let (code, doc) = run_json(w.cmd_sub("verify").arg("--json"));
    assert_eq!(
        (code, &doc["agents"]),
        (0, &serde_json::json!([])),
        "{what}: {doc:#}"
    );
    doc
}

fn pids_in(doc: &serde_json::Value) -> Vec<(u64, String)> {
    doc["agents"]
        .as_array()
        .unwrap_or_else(|| panic!("no agents array: {doc:#}"))
        .iter()
        .map(|a| {
            (
                a["pid"].as_u64().unwrap(),
                a["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The command as an operator runs it: `verify` lists every agent, exits 0 when all share the
/// lock and 5 naming each one that does not, with the fix; `status` counts them; `--json`
/// lists them (valid against the schema). Nothing in the world changes.
#[test]
fn verify_and_status_report_the_agents() {
    let (bin, _serial) = real_agents!("needs root (mount namespaces, chroot, other users' /proc)");
    let w = really_migrated_world();

    // No agent: said so, not a problem.
    let r = run(&mut w.cmd_sub("verify"));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("agents: none running"), "{}", r.stdout);
    let doc = verify_lists_no_agents(&w, "verify");
    assert_schema_valid("verify, no agents", &doc);

    let a = start_factory_agent(&w, &bin, "");
    let d = start_host_agent(&w, &bin);
    let before = w.manifest();
    let r = run(&mut w.cmd_sub("verify"));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("agents: 2 running, all share the lock"),
        "{}",
        r.stdout
    );
    for pid in [a.pid, d.pid] {
        assert!(r.stdout.contains(&format!("pid {pid} ")), "{}", r.stdout);
    }
    let r = run(&mut w.cmd_sub("status"));
    assert_eq!(r.code, 0);
    assert!(
        r.stdout.contains("agents: 2 running, all share the lock"),
        "{}",
        r.stdout
    );
    let (_, doc) = run_json(w.cmd_sub("status").arg("--json"));
    assert_schema_valid("status, two agents", &doc);
    assert!(doc["agents"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["lock_probe"].is_null()));
    assert_same(
        &before,
        &w.manifest(),
        "verify and status with agents running",
    );

    // The old layout and an unrelated dir: exit 5, each named, with the fix.
    let home_env = agent_env();
    let other = other_config_dir();
    let b = start_old_layout_agent(&w, &bin);
    // c is the factory's (started with its CLAUDE_SHARED_DIR, as from the factory's .env) but
    // mounts an unrelated directory as ~/.claude.
    let mut c_env = home_env.to_vec();
    c_env.push(("CLAUDE_SHARED_DIR", w.shared.as_os_str()));
    let c = start_other_config_agent(&w, &bin, other.path(), &c_env);
    // h: someone else's Claude with its own config dir (no container, none of the factory's
    // variables, not this home): listed and warned about, not a problem.
    let h_home = tempfile::Builder::new()
        .prefix("dci-other-home.")
        .tempdir_in("/tmp")
        .unwrap();
    let h = start_host(
        &w,
        &bin,
        &[
            ("PATH", OsStr::new("/usr/bin:/bin")),
            ("HOME", h_home.path().as_os_str()),
        ],
    );
    let before = w.manifest();
    let r = run(&mut w.cmd_sub("verify"));
    assert_eq!(r.code, 5, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains(
            "agents: 4 running, 2 do not share the lock (and 1 other Claude Code on this machine, not this factory's)"
        ),
        "{}",
        r.stdout
    );
    assert!(
        r.stderr.contains(&format!("Claude Code pid {} ", h.pid))
            && r.stderr
                .contains("is not counted as one of this factory's agents"),
        "{}",
        r.stderr
    );
    let (code, doc) = run_json(w.cmd_sub("verify").arg("--json"));
    assert_eq!(code, 5);
    assert_schema_valid("verify, four agents", &doc);
    let mut want = vec![
        (a.pid as u64, "shares-lock".to_string()),
        (b.pid as u64, "lock-not-shared".to_string()),
        (c.pid as u64, "other-config-dir".to_string()),
        (d.pid as u64, "shares-lock".to_string()),
        (h.pid as u64, "other-config-dir".to_string()),
    ];
    want.sort();
    assert_eq!(pids_in(&doc), want, "{doc:#}");
    for a in doc["agents"].as_array().unwrap() {
        assert_eq!(a["factory"], a["pid"] != h.pid, "{a:#}");
    }
    let problems = doc["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 2, "{doc:#}");
    for (pid, kind) in [
        (b.pid, "agent-lock-not-shared"),
        (c.pid, "agent-other-config-dir"),
    ] {
        let p = problems
            .iter()
            .find(|p| p["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind}: {doc:#}"));
        let msg = p["message"].as_str().unwrap();
        let fix = p["fix"].as_str().unwrap();
        assert!(msg.contains(&format!("pid {pid} ")), "{msg}");
        let shared = w.shared.to_str().unwrap();
        assert!(fix.contains(&format!("{shared}:{shared}")), "{fix}");
        assert!(
            fix.contains(&format!("CLAUDE_CONFIG_DIR={}", w.config.display())),
            "{fix}"
        );
        assert!(fix.contains("restart"), "{fix}");
    }
    assert!(
        problems[0]["message"]
            .as_str()
            .unwrap()
            .contains("/home/agent/.claude.lock"),
        "the old layout's message names the lock it takes instead: {doc:#}"
    );
    assert_same(&before, &w.manifest(), "verify with four agents");
    drop((b, c));
    let r = run(&mut w.cmd_sub("verify"));
    assert_eq!(
        r.code, 0,
        "after the two are gone (h, not the factory's, still runs): {}\n{}",
        r.stdout, r.stderr
    );
    drop(h);
}

/// Not root: the agents of other users are listed but cannot be inspected, which is a warning
/// that says to run as root, not a problem; the user's own agents are judged (and probed) as
/// usual; another world's agent is not seen (test builds: `DCI_TEST_WORLD` and `argv[0]`).
#[test]
fn not_root_own_agents_are_judged_others_are_a_warning() {
    let (bin, _serial) = real_agents!("needs root (to start agents as two users)");
    let w = really_migrated_world();
    let a = start_factory_agent(&w, &bin, "");
    let d = start_host_agent(&w, &bin);
    // Another world's root agent (another suite's, on a shared machine): not this world's, and
    // uid 1000 cannot read its environment either; its argv[0] tells it apart.
    let other_world = really_migrated_world();
    let o = start_host_agent(&other_world, &bin);
    // verify runs as uid 1000 with the agent's own groups: it can take the agent's credentials
    // (not root, it probes only as itself).
    let status = fs::read_to_string(format!("/proc/{}/status", a.pid)).unwrap();
    let groups: Vec<&str> = status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .unwrap()
        .split_whitespace()
        .collect();
    let groups_arg = if groups.is_empty() {
        "--clear-groups".to_string()
    } else {
        format!("--groups={}", groups.join(","))
    };
    let mut cmd = verify_as_uid_1000(&w, &groups_arg);
    let before = w.manifest();
    let (_, doc) = run_json(&mut cmd);
    assert_same(&before, &w.manifest(), "verify as uid 1000");
    assert_schema_valid("verify as uid 1000", &doc);
    let agents = doc["agents"].as_array().unwrap();
    let get = |pid: u32| {
        agents
            .iter()
            .find(|x| x["pid"] == pid)
            .unwrap_or_else(|| panic!("pid {pid} not listed: {doc:#}"))
    };
    assert_eq!(get(a.pid)["verdict"], "shares-lock", "{doc:#}");
    assert_eq!(get(a.pid)["lock_probe"]["ok"], true, "{doc:#}");
    assert_eq!(get(d.pid)["verdict"], "cannot-read", "{doc:#}");
    assert_eq!(get(d.pid)["uid"], 0, "{doc:#}");
    assert!(
        agents.iter().all(|x| x["pid"] != o.pid),
        "pid {} (another world's) listed: {doc:#}",
        o.pid
    );
    assert!(
        get(d.pid)["reason"]
            .as_str()
            .unwrap()
            .contains("Permission denied"),
        "{doc:#}"
    );
    let problems = doc["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .all(|p| !p["kind"].as_str().unwrap().starts_with("agent-")),
        "{doc:#}"
    );
    let warned = doc["warnings"].as_array().unwrap().iter().any(|w| {
        let w = w.as_str().unwrap();
        w.contains(&format!("pid {} ", d.pid)) && w.contains("sudo disinto-claude-init verify")
    });
    assert!(warned, "{doc:#}");
    // With other groups than the agent's it cannot act as the agent: the probe is not run
    // (rather than run as someone else).
    if !groups.is_empty() {
        let (_, doc) = run_json(&mut verify_as_uid_1000(&w, "--clear-groups"));
        let a_doc = doc["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["pid"] == a.pid)
            .unwrap()
            .clone();
        assert_eq!(a_doc["verdict"], "shares-lock", "{doc:#}");
        assert!(a_doc["lock_probe"].is_null(), "{doc:#}");
    }
}

/// The suite's isolation from the machine (test builds only, `DCI_TEST_WORLD`): while world A's
/// container Claude runs (an unrelated dir as its `~/.claude`: "another config dir" for A),
/// world B migrates and verifies with exit 0 and no agent listed; A's own verify still judges
/// its agent (exit 5); and B's verify without the token (the scan of the whole machine, as in
/// release builds) does see it, so B's clean result comes from the token, not from luck.
#[test]
fn a_world_sees_only_its_own_agents() {
    let (bin, _serial) = real_agents!("needs root (mount namespaces, chroot, other users' /proc)");
    let a_world = really_migrated_world();
    let other = other_config_dir();
    let mut env = agent_env().to_vec();
    env.push(("CLAUDE_SHARED_DIR", a_world.shared.as_os_str()));
    let a = start_other_config_agent(&a_world, &bin, other.path(), &env);
    // The token really reaches claude's own environment (through unshare, chroot and env -i).
    let mut entry = b"DCI_TEST_WORLD=".to_vec();
    entry.extend_from_slice(a_world.token().as_encoded_bytes());
    let environ = fs::read(format!("/proc/{}/environ", a.pid)).unwrap();
    assert!(
        environ.split(|&b| b == 0).any(|kv| kv == entry.as_slice()),
        "pid {}'s environ lacks {}: {}",
        a.pid,
        String::from_utf8_lossy(&entry),
        String::from_utf8_lossy(&environ)
    );

    // World B: migrate and verify while A's agent runs.
    let b_world = really_migrated_world();
    let before = b_world.manifest();
    verify_lists_no_agents(&b_world, "B: verify");
    assert_same(&before, &b_world.manifest(), "B: verify");

    // World A: its own agent is judged.
    let (code, doc) = run_json(a_world.cmd_sub("verify").arg("--json"));
    assert_eq!(code, 5, "A: verify: {doc:#}");
    assert_eq!(
        pids_in(&doc),
        vec![(u64::from(a.pid), "other-config-dir".to_string())],
        "A: verify: {doc:#}"
    );

    // Control: B's verify without the token sees A's agent.
    let (_, doc) = run_json(
        b_world
            .cmd_sub("verify")
            .arg("--json")
            .env_remove("DCI_TEST_WORLD"),
    );
    assert!(
        pids_in(&doc).iter().any(|(p, _)| *p == u64::from(a.pid)),
        "B without DCI_TEST_WORLD: {doc:#}"
    );
}
