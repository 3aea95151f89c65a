//! The migrated layout against software nobody on this project wrote (issue 11 item 7): the
//! real proper-lockfile and the real Claude Code, installed by the tests from the npm registry
//! (pinned, into `target/tmp/npm`, see `common/npm.rs`), driven in temp worlds migrated by the
//! real binary. They do not skip: without node/npm or the registry they fail, unless
//! `DCI_SKIP_REAL_CLIENTS=1` is set.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::npm::{install, require_real_clients};
use common::*;

const PROPER_LOCKFILE: &str = "4.1.2";
/// The version issue 11 checked by hand, and the one disinto's images pin.
const CLAUDE_VERSIONS: &[&str] = &["2.1.197", "2.1.84"];

/// Migrate the world with the real binary (`migrate --yes`), asserting exit 0.
fn migrate(w: &World) {
    let r = run(w.cmd_sub("migrate").arg("--yes"));
    assert_eq!(r.code, 0, "migrate failed\n{}\n{}", r.stdout, r.stderr);
    let claude = fs::symlink_metadata(w.claude()).unwrap();
    assert!(claude.file_type().is_symlink(), "~/.claude is not a link");
}

// ---------------------------------------------------------------------------------------------
// proper-lockfile
// ---------------------------------------------------------------------------------------------

/// One locker process. Each critical section: take the lock with proper-lockfile's defaults
/// (`realpath: true`, as Claude Code's legacy lock), own retry loop so that every "held"
/// (ELOCKED) is recorded as a `blocked/` marker; mark `inside/<group>.<id>`; list `inside/`
/// (an entry of the other group there now is an overlap); then hold the lock until an EVENT from
/// the other group: one of them is inside too (overlap), or one of them was refused the lock
/// after we entered (it is excluded: by us, or in the control by its own group), or all of them
/// are done. Unmark, log, release. No sleep decides anything: the 1 ms pauses are poll
/// intervals, and the outcome is the same however slow the machine is.
const LOCKER_JS: &str = r#"
const [, , plDir, target, id, group, iters, dir, others] = process.argv;
const lockfile = require(plDir);
const fs = require('fs');
const path = require('path');
const other = group === 'home' ? 'config' : 'home';
const me = `${group}.${id}`;
const pause = () => new Promise((r) => setTimeout(r, 1));
const ofOther = (sub) => fs.readdirSync(path.join(dir, sub)).filter((f) => f.startsWith(other + '.'));
const log = (o) => fs.appendFileSync(path.join(dir, 'log', me), JSON.stringify(o) + '\n');
(async () => {
  let refused = 0;
  for (let i = 0; i < +iters; i++) {
    let release;
    for (;;) {
      try {
        release = await lockfile.lock(target, { stale: 600000, retries: 0 });
        break;
      } catch (e) {
        if (e.code !== 'ELOCKED') throw e;
        fs.writeFileSync(path.join(dir, 'blocked', `${me}.${refused++}`), '');
        await pause();
      }
    }
    const enter = process.hrtime.bigint();
    fs.writeFileSync(path.join(dir, 'inside', me), '');
    const seen = new Set(ofOther('inside'));
    const blockedBefore = new Set(ofOther('blocked'));
    let reason = seen.size ? 'other-inside' : null;
    while (!reason) {
      await pause();
      const inside = ofOther('inside');
      if (inside.length) { inside.forEach((x) => seen.add(x)); reason = 'other-inside'; break; }
      if (ofOther('blocked').some((b) => !blockedBefore.has(b))) {
        const again = ofOther('inside');
        again.forEach((x) => seen.add(x));
        reason = again.length ? 'other-inside' : 'other-blocked';
        break;
      }
      if (ofOther('done').length >= +others) { reason = 'other-done'; break; }
    }
    fs.unlinkSync(path.join(dir, 'inside', me));
    const exit = process.hrtime.bigint();
    log({ id: me, i, enter: String(enter), exit: String(exit), overlap: [...seen], reason });
    await release();
  }
  fs.writeFileSync(path.join(dir, 'done', me), '');
})().catch((e) => { console.error(e && e.stack || e); process.exit(1); });
"#;

#[derive(Debug, Default)]
struct LockRun {
    sections: usize,
    overlaps: usize,
    reasons: BTreeMap<String, usize>,
}

/// `per_group` node processes lock `home_target`, as many lock `config_target`, each for
/// `iters` critical sections, all at once.
fn lock_race(pl: &Path, home_target: &Path, config_target: &Path) -> LockRun {
    const PER_GROUP: usize = 4;
    const ITERS: usize = 10;
    let work = tempfile::tempdir().unwrap();
    for sub in ["inside", "blocked", "done", "log"] {
        fs::create_dir(work.path().join(sub)).unwrap();
    }
    let script = work.path().join("locker.js");
    fs::write(&script, LOCKER_JS).unwrap();
    let mut children: Vec<(String, Child)> = Vec::new();
    for id in 0..PER_GROUP {
        for (group, target) in [("home", home_target), ("config", config_target)] {
            let child = Command::new("node")
                .arg(&script)
                .arg(pl)
                .arg(target)
                .arg(id.to_string())
                .arg(group)
                .arg(ITERS.to_string())
                .arg(work.path())
                .arg(PER_GROUP.to_string())
                .env_clear()
                .env("PATH", "/usr/local/bin:/usr/bin:/bin")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn node (install Node.js: apt-get install -y nodejs)");
            children.push((format!("{group}.{id}"), child));
        }
    }
    // A deadlock guard, not a synchronisation: every process ends on events alone.
    let deadline = Instant::now() + Duration::from_secs(600);
    for (name, mut child) in children {
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("locker {name} did not finish in 600 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        use std::io::Read;
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(status.success(), "locker {name}: {status}\n{err}");
    }
    let mut r = LockRun::default();
    for entry in fs::read_dir(work.path().join("log")).unwrap() {
        for line in fs::read_to_string(entry.unwrap().path()).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            r.sections += 1;
            if !v["overlap"].as_array().unwrap().is_empty() {
                r.overlaps += 1;
            }
            *r.reasons
                .entry(v["reason"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    assert_eq!(r.sections, 2 * PER_GROUP * ITERS, "{r:?}");
    r
}

fn proper_lockfile() -> PathBuf {
    install("proper-lockfile", PROPER_LOCKFILE).dir
}

#[test]
fn proper_lockfile_host_and_container_paths_take_one_lock_after_migration() {
    if !require_real_clients("proper-lockfile") {
        return;
    }
    let pl = proper_lockfile();
    let w = World::realistic();
    migrate(&w);
    // The host's processes lock through ~/.claude (now the link), the containers' through the
    // config path: proper-lockfile's realpath makes it one lock directory.
    let r = lock_race(&pl, &w.claude(), &w.config);
    eprintln!("migrated: {r:?}");
    assert_eq!(
        r.overlaps, 0,
        "two holders at once after a migration: {r:?}"
    );
    // The race really happened: some holder saw the other side refused while it held the lock.
    assert!(
        r.reasons.get("other-blocked").copied().unwrap_or(0) > 0,
        "no contention between the two sides: the test proved nothing: {r:?}"
    );
    assert!(!w.shared.join("config.lock").exists(), "lock left behind");
}

#[test]
fn proper_lockfile_control_unmigrated_dirs_overlap() {
    if !require_real_clients("proper-lockfile") {
        return;
    }
    let pl = proper_lockfile();
    // The setup the migration replaces: the host's ~/.claude and the containers' config dir
    // are two directories, hence two locks.
    let w = World::realistic();
    mkdir(&w.shared, 0o755);
    mkdir(&w.config, 0o700);
    let r = lock_race(&pl, &w.claude(), &w.config);
    eprintln!("control: {r:?}");
    assert!(r.overlaps > 0, "the control shows no overlap: {r:?}");
}

// ---------------------------------------------------------------------------------------------
// Claude Code
// ---------------------------------------------------------------------------------------------

/// A fake but well-formed OAuth login (never sent anywhere: no network is used).
const FAKE_CREDENTIALS: &str = r#"{"claudeAiOauth":{"accessToken":"sk-ant-oat01-dci-fake","refreshToken":"sk-ant-ort01-dci-fake","expiresAt":4102444800000,"scopes":["user:inference","user:profile"],"subscriptionType":"max"}}"#;

/// `claude ARGS` as the home's user would run it, with `CLAUDE_CONFIG_DIR` set or not; nothing
/// that could reach the network (auto-updater, telemetry, error reports, nonessential traffic)
/// is on, and `run` kills it after `RUN_TIMEOUT`.
fn claude(bin: &Path, w: &World, config_dir: Option<&Path>, args: &[&str]) -> Run {
    let mut c = common::npm::offline_claude(bin, &w.home, args);
    if let Some(d) = config_dir {
        c.env("CLAUDE_CONFIG_DIR", d);
    }
    let r = run(&mut c);
    assert_eq!(
        r.code, 0,
        "claude {args:?} (CLAUDE_CONFIG_DIR={config_dir:?}) failed\n{}\n{}",
        r.stdout, r.stderr
    );
    r
}

/// A home with a login, settings and a user MCP server, migrated by the real binary.
fn migrated_claude_home() -> World {
    let w = World::new();
    mkdir(&w.claude(), 0o755);
    write_file(
        &w.claude().join(".credentials.json"),
        FAKE_CREDENTIALS.as_bytes(),
        0o600,
    );
    write_file(
        &w.claude().join("settings.json"),
        br#"{"permissions":{"allow":["Bash(ls:*)"]}}"#,
        0o644,
    );
    write_file(
        &w.claude_json(),
        br#"{"numStartups":3,"hasCompletedOnboarding":true,"mcpServers":{"before":{"type":"stdio","command":"/bin/true","args":["before"],"env":{}}}}"#,
        0o600,
    );
    migrate(&w);
    assert!(fs::symlink_metadata(w.claude_json())
        .unwrap()
        .file_type()
        .is_symlink());
    w
}

fn auth_status(bin: &Path, w: &World, cfg: Option<&Path>) -> serde_json::Value {
    let r = claude(bin, w, cfg, &["auth", "status"]);
    serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("auth status is not JSON ({e}): {}", r.stdout))
}

fn is_symlink(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

fn claude_same_with_and_without_config_dir(version: &str) {
    let bin = install("@anthropic-ai/claude-code", version).bin("claude");
    let v = claude(&bin, &World::new(), None, &["--version"]);
    assert!(v.stdout.contains(version), "{}", v.stdout);

    let w = migrated_claude_home();
    let cfg = Some(w.config.as_path());

    let without = auth_status(&bin, &w, None);
    let with = auth_status(&bin, &w, cfg);
    assert_eq!(without["loggedIn"], true, "{without}");
    assert_eq!(without, with);

    let without = claude(&bin, &w, None, &["mcp", "list"]).stdout;
    let with = claude(&bin, &w, cfg, &["mcp", "list"]).stdout;
    assert!(without.contains("before"), "{without}");
    assert_eq!(without, with);

    // A user-scope server added WITHOUT the variable: written through ~/.claude.json, which
    // stays the link, and seen WITH the variable.
    claude(
        &bin,
        &w,
        None,
        &[
            "mcp",
            "add",
            "-s",
            "user",
            "added",
            "--",
            "/bin/true",
            "added",
        ],
    );
    assert!(
        is_symlink(&w.claude_json()),
        "~/.claude.json is no longer a link"
    );
    assert!(is_symlink(&w.claude()), "~/.claude is no longer a link");
    let target = w.config.join(".claude.json");
    assert!(fs::symlink_metadata(&target).unwrap().is_file());
    let with = claude(&bin, &w, cfg, &["mcp", "list"]).stdout;
    assert!(with.contains("added") && with.contains("before"), "{with}");
    let get = claude(&bin, &w, cfg, &["mcp", "get", "added"]).stdout;
    assert!(get.contains("/bin/true"), "{get}");
    assert_eq!(with, claude(&bin, &w, None, &["mcp", "list"]).stdout);

    // And the tool still calls the result healthy.
    let r = run(&mut w.cmd_sub("verify"));
    assert_eq!(
        r.code, 0,
        "verify after claude ran\n{}\n{}",
        r.stdout, r.stderr
    );
}

#[test]
fn claude_code_2_1_197_reads_the_same_with_and_without_claude_config_dir() {
    if require_real_clients("Claude Code") {
        claude_same_with_and_without_config_dir(CLAUDE_VERSIONS[0]);
    }
}

#[test]
fn claude_code_2_1_84_reads_the_same_with_and_without_claude_config_dir() {
    if require_real_clients("Claude Code") {
        claude_same_with_and_without_config_dir(CLAUDE_VERSIONS[1]);
    }
}

/// The `{}` (0600) `.claude.json` a later step will create on a host that has none: Claude
/// takes it as a valid, empty config (no "corrupted" backup, login seen, servers can be added).
fn claude_accepts_empty_object_config(version: &str) {
    let bin = install("@anthropic-ai/claude-code", version).bin("claude");
    let w = World::new();
    mkdir(&w.claude(), 0o755);
    write_file(
        &w.claude().join(".credentials.json"),
        FAKE_CREDENTIALS.as_bytes(),
        0o600,
    );
    migrate(&w);
    let file = w.config.join(".claude.json");
    write_file(&file, b"{}", 0o600);
    let cfg = Some(w.config.as_path());
    let status = auth_status(&bin, &w, cfg);
    assert_eq!(status["loggedIn"], true, "{status}");
    let list = claude(&bin, &w, cfg, &["mcp", "list"]).stdout;
    assert!(list.contains("No MCP servers"), "{list}");
    claude(
        &bin,
        &w,
        cfg,
        &["mcp", "add", "-s", "user", "x", "--", "/bin/true"],
    );
    let json: serde_json::Value = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
    assert_eq!(json["mcpServers"]["x"]["command"], "/bin/true", "{json}");
    assert_eq!(mode_of(&file), 0o600);
    let corrupt: Vec<String> = walk_names(&w.config)
        .into_iter()
        .filter(|n| n.contains("corrupt"))
        .collect();
    assert!(
        corrupt.is_empty(),
        "claude called `{{}}` corrupt: {corrupt:?}"
    );
}

fn walk_names(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        out.push(e.file_name().to_string_lossy().into_owned());
        if e.file_type().unwrap().is_dir() {
            out.extend(walk_names(&e.path()));
        }
    }
    out
}

#[test]
fn claude_code_2_1_197_accepts_an_empty_object_claude_json() {
    if require_real_clients("Claude Code") {
        claude_accepts_empty_object_config(CLAUDE_VERSIONS[0]);
    }
}

#[test]
fn claude_code_2_1_84_accepts_an_empty_object_claude_json() {
    if require_real_clients("Claude Code") {
        claude_accepts_empty_object_config(CLAUDE_VERSIONS[1]);
    }
}
