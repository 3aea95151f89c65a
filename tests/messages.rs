//! Every refusal and error the operator can meet, side by side in one snapshot, so they can be
//! reviewed together: each must say what was found, why it matters, and (on a `fix:` line) the
//! exact command that fixes it, with the real paths. World paths are redacted to [HOME],
//! [SHARED], [ENV], [RC] and [ROOT] so the snapshots are stable.
//!
//! Also snapshots of the human plan and the `--json` dry-run document for the legacy fixture.
//!
//! Snapshots live in tests/snapshots/. After an intended change to a message, review and
//! accept with `cargo insta review`, or `INSTA_UPDATE=always cargo test --all-features --test
//! messages` and a look at `git diff tests/snapshots`. Under CI (`CI=true`) insta never writes
//! snapshots: a difference fails the test.

mod common;

use common::*;
use serde_json::Value;
use std::ffi::OsString;
use std::fs;
use std::path::Path;
use std::process::Command;

/// Replace the world's paths by placeholders (longest first, so `[SHARED]/config`, not
/// `[ROOT]/var/...`).
fn redact(w: &World, s: &str) -> String {
    let mut pairs: Vec<(String, &str)> = vec![
        (w.env_file.display().to_string(), "[ENV]"),
        (w.profile.display().to_string(), "[RC]"),
        (w.shared.display().to_string(), "[SHARED]"),
        (w.home.display().to_string(), "[HOME]"),
        (w.root.display().to_string(), "[ROOT]"),
    ];
    pairs.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    let mut out = s.to_string();
    for (p, ph) in pairs {
        out = out.replace(&p, ph);
    }
    out
}

fn redact_json(w: &World, v: &mut Value) {
    match v {
        Value::String(s) => *s = redact(w, s),
        Value::Array(a) => a.iter_mut().for_each(|x| redact_json(w, x)),
        Value::Object(o) => o.values_mut().for_each(|x| redact_json(w, x)),
        _ => {}
    }
}

/// One case: the human run (stderr is what the operator reads) and the `--json` run (for the
/// error kind, and to check both say the same thing). Asserts the exit code, a `fix:` line,
/// and that nothing in the world changed.
struct Case<'a> {
    title: &'a str,
    want_code: i32,
}

fn case(out: &mut String, w: &World, c: Case, args: &[OsString], env: &[(&str, &str)]) {
    let build = |json: bool| {
        let mut cmd = w.cmd_bare();
        cmd.args(args).args(["--color", "never"]);
        if json {
            cmd.arg("--json");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    };
    let before = w.manifest();
    let human = run(&mut build(false));
    let (jcode, doc) = run_json(&mut build(true));
    assert_same(&before, &w.manifest(), c.title);
    check_message(out, w, &c, &human, jcode, &doc);
}

fn check_message(out: &mut String, w: &World, c: &Case, human: &Run, jcode: i32, doc: &Value) {
    let title = c.title;
    assert_eq!(
        human.code, c.want_code,
        "{title}: exit code\nstdout:\n{}\nstderr:\n{}",
        human.stdout, human.stderr
    );
    assert_eq!(
        jcode, c.want_code,
        "{title}: exit code with --json: {doc:#}"
    );
    assert!(
        human
            .stderr
            .lines()
            .any(|l| l.trim_start().starts_with("fix: ")),
        "{title}: no `fix:` line:\n{}",
        human.stderr
    );
    let err = &doc["error"];
    let kind = err["kind"]
        .as_str()
        .unwrap_or_else(|| panic!("{title}: {doc:#}"));
    let message = err["message"].as_str().unwrap();
    let fix = err["fix"]
        .as_str()
        .unwrap_or_else(|| panic!("{title}: --json error has no fix: {doc:#}"));
    assert!(
        human.stderr.contains(message) && human.stderr.contains(fix),
        "{title}: the human and --json messages differ\nstderr:\n{}\njson: {err:#}",
        human.stderr
    );
    out.push_str(&format!(
        "=== {title}  (exit {}, kind {kind})\n{}\n",
        human.code,
        redact(w, human.stderr.trim_end())
    ));
}

fn args(w: &World, extra: &[&str]) -> Vec<OsString> {
    let mut v = w.path_args();
    v.extend(extra.iter().map(OsString::from));
    v
}

#[test]
fn every_refusal_and_error_message() {
    let mut out = String::new();

    for (name, title) in [
        (
            "conflict",
            "conflict: ~/.claude and the config dir both hold files",
        ),
        (
            "foreign-symlink",
            "foreign-symlink: ~/.claude links elsewhere",
        ),
        ("not-a-directory", "not-a-directory: ~/.claude is a file"),
    ] {
        let w = load_fixture(name);
        case(
            &mut out,
            &w,
            Case {
                title,
                want_code: 3,
            },
            &args(&w, &["--yes"]),
            &[],
        );
    }

    // ~/.claude.json exists, and so does the config dir's .claude.json.
    let w = load_fixture("adopt");
    write_file(&w.claude_json(), b"{\"numStartups\":3}\n", 0o600);
    case(
        &mut out,
        &w,
        Case {
            title: "claude-json-conflict: ~/.claude.json and <config>/.claude.json both exist",
            want_code: 3,
        },
        &args(&w, &["--yes"]),
        &[],
    );

    // An agent holds the session lock (as the factory's wrapper does around every Claude run).
    let w = load_fixture("legacy");
    let lock = w.claude().join("session.lock");
    write_file(&lock, b"", 0o644);
    let held = nix::fcntl::Flock::lock(
        fs::File::open(&lock).unwrap(),
        nix::fcntl::FlockArg::LockExclusiveNonblock,
    )
    .expect("take the session lock");
    case(
        &mut out,
        &w,
        Case {
            title: "agent-running: a process holds ~/.claude/session.lock",
            want_code: 3,
        },
        &args(&w, &["--yes"]),
        &[],
    );
    drop(held);

    // No terminal and no --yes.
    let w = load_fixture("legacy");
    case(
        &mut out,
        &w,
        Case {
            title: "not-confirmed: no terminal and no --yes",
            want_code: 4,
        },
        &args(&w, &[]),
        &[],
    );

    // Usage errors.
    let w = load_fixture("legacy");
    case(
        &mut out,
        &w,
        Case {
            title: "relative --shared-dir",
            want_code: 2,
        },
        &[
            "--home".into(),
            w.home.clone().into(),
            "--shared-dir".into(),
            "var/lib/disinto/claude-shared".into(),
            "--yes".into(),
        ],
        &[],
    );
    case(
        &mut out,
        &w,
        Case {
            title: "relative --config-dir",
            want_code: 2,
        },
        &args(&w, &["--config-dir", "claude-config", "--yes"]),
        &[],
    );
    case(
        &mut out,
        &w,
        Case {
            title: "nonexistent --home",
            want_code: 2,
        },
        &[
            "--home".into(),
            w.root.join("home/nobody").into(),
            "--shared-dir".into(),
            w.shared.clone().into(),
            "--yes".into(),
        ],
        &[],
    );

    // undo refuses to overwrite an edit made since the migration.
    let w = World::realistic();
    let r = run(w.cmd().arg("--yes"));
    assert_eq!(r.code, 0, "migrate: {}", r.stderr);
    case(
        &mut out,
        &w,
        Case {
            title: "not-confirmed: undo with no terminal and no --yes",
            want_code: 4,
        },
        &[&[OsString::from("undo")][..], &args(&w, &[])].concat(),
        &[],
    );
    let mut env = fs::read(&w.env_file).unwrap();
    env.extend_from_slice(b"ADDED_BY_HAND=1\n");
    fs::write(&w.env_file, env).unwrap();
    case(
        &mut out,
        &w,
        Case {
            title: "changed-since: the env file was edited after the migration",
            want_code: 3,
        },
        &[&[OsString::from("undo")][..], &args(&w, &["--yes"])].concat(),
        &[],
    );

    insta::assert_snapshot!("refusals_and_errors", out);
}

/// No permission: root drops to uid 65534 (setpriv) on a world whose home that user owns but
/// whose shared dir's parent only root can write. Root only; a separate snapshot so that
/// environments that skip it still match the main one.
#[test]
fn no_permission_message() {
    if !is_root() {
        skip!("the no-permission refusal needs root (to drop to uid 65534 with setpriv)");
    }
    let have_setpriv = Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_setpriv {
        skip!("setpriv is not installed");
    }
    // The binary must be reachable by uid 65534.
    let reachable = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(BIN)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !reachable {
        skip!("uid 65534 cannot execute {BIN} (a parent directory is not traversable)");
    }
    let w = load_fixture("legacy");
    chown_tree(&w.home, 65534, 65534);
    fs::remove_file(&w.profile).ok();
    let mut cmdline: Vec<OsString> = vec![
        "--reuid=65534".into(),
        "--regid=65534".into(),
        "--clear-groups".into(),
        "--".into(),
        BIN.into(),
    ];
    cmdline.extend(args(&w, &["--yes", "--no-modify-profile", "--no-env-file"]));
    let build = |json: bool| {
        let mut c = Command::new("setpriv");
        c.args(&cmdline)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &w.home)
            .env("LANG", "C.UTF-8")
            .arg("--color")
            .arg("never")
            .stdin(std::process::Stdio::null());
        if json {
            c.arg("--json");
        }
        c
    };
    let before = w.manifest();
    let human = run(&mut build(false));
    let (jcode, doc) = run_json(&mut build(true));
    assert_same(&before, &w.manifest(), "no permission");
    let mut out = String::new();
    check_message(
        &mut out,
        &w,
        &Case {
            title: "no-permission: uid 65534 cannot create the shared dir",
            want_code: 3,
        },
        &human,
        jcode,
        &doc,
    );
    insta::assert_snapshot!("no_permission", out);
}

fn chown_tree(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
    if fs::symlink_metadata(p).unwrap().is_dir() {
        for e in fs::read_dir(p).unwrap() {
            chown_tree(&e.unwrap().path(), uid, gid);
        }
    }
}

/// The plan people read before the prompt, for the legacy fixture with an env file and an rc
/// file (colour off).
#[test]
fn human_plan_of_the_legacy_fixture() {
    let w = load_fixture("legacy");
    write_env_file(&w.env_file);
    let r = run(w.cmd().args(["--dry-run", "--color", "never"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        !r.stdout.contains('\x1b'),
        "--color never printed escapes:\n{}",
        r.stdout
    );
    let shown = format!(
        "--- stdout\n{}--- stderr\n{}",
        redact(&w, &r.stdout),
        redact(&w, &r.stderr)
    );
    insta::assert_snapshot!("human_plan_legacy", shown);
}

/// The `--json` dry-run document for the same world.
#[test]
fn json_dry_run_of_the_legacy_fixture() {
    let w = load_fixture("legacy");
    write_env_file(&w.env_file);
    let (code, mut doc) = run_json(w.cmd().args(["--dry-run", "--json"]));
    assert_eq!(code, 0, "{doc:#}");
    redact_json(&w, &mut doc);
    insta::assert_json_snapshot!("json_dry_run_legacy", doc);
}

/// The two failures of an apply: rolled back (exit 1) and a rollback that fails too (exit 6),
/// made with failpoints. A snapshot of its own: it exists only with `--features failpoints`.
#[cfg(feature = "failpoints")]
#[test]
fn failure_messages() {
    let mut out = String::new();
    let w = World::realistic();
    case(
        &mut out,
        &w,
        Case {
            title: "apply-failed: a step failed, everything rolled back",
            want_code: 1,
        },
        &args(&w, &["--yes"]),
        &[("DCI_FAILPOINTS", "apply-link-claude-dir=error")],
    );

    // Rolling back fails too: the world is left partly changed, so no manifest check here.
    let w = World::realistic();
    let run_it = |json: bool| {
        let mut c = w.cmd();
        c.args(["--yes", "--color", "never"]).env(
            "DCI_FAILPOINTS",
            "apply-link-claude-dir=error,undo-move-config=error",
        );
        if json {
            c.arg("--json");
        }
        c
    };
    let human = run(&mut run_it(false));
    // Recover so the JSON run meets the same state.
    let r = run(w.cmd_sub("undo").arg("--yes"));
    assert_eq!(r.code, 0, "undo after a failed rollback: {}", r.stderr);
    let (jcode, doc) = run_json(&mut run_it(true));
    check_message(
        &mut out,
        &w,
        &Case {
            title: "rollback-failed: a step failed and so did rolling back",
            want_code: 6,
        },
        &human,
        jcode,
        &doc,
    );
    assert!(
        human.stderr.contains("journal"),
        "exit 6 names the journal: {}",
        human.stderr
    );
    insta::assert_snapshot!("failures", out);
}
