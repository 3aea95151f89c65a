//! The `disinto init` integration (issue 4): docs/disinto-init.sh, run by a real bash against
//! fixture worlds with the built binary on PATH, exactly as `disinto init` would call it.
//! Every exit code the function branches on is reached: with the real tool where it can return
//! it (0, 1, 2, 3, 5, 6, 127), with a stub only for 4 and a signal (the tool given `--yes`
//! never asks).

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn snippet_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/disinto-init.sh")
}

fn bin_dir() -> PathBuf {
    Path::new(BIN).parent().unwrap().to_path_buf()
}

/// A caller like `disinto init`: `set -euo pipefail`, source the snippet, call the function with
/// `$@`, then print what it returned and the CLAUDE_* values it left in the shell.
const CALLER: &str = r#"
set -euo pipefail
. "$DCI_SNIPPET"
rc=0
disinto_setup_claude_config "$@" || rc=$?
echo "function returned $rc"
echo "exported CLAUDE_SHARED_DIR=${CLAUDE_SHARED_DIR:-}"
echo "exported CLAUDE_CONFIG_DIR=${CLAUDE_CONFIG_DIR:-}"
exit "$rc"
"#;

/// The world's factory dir (`$FACTORY_ROOT`): the env file's directory.
fn factory_root(w: &World) -> PathBuf {
    w.env_file.parent().unwrap().to_path_buf()
}

/// `bash -c <script> bash <args...>` with a cleared environment: PATH = the binary's dir and the
/// system dirs, HOME = the world's home, FACTORY_ROOT, CLAUDE_SHARED_DIR = the world's.
fn caller(w: &World, script: &str, args: &[&str]) -> Command {
    let mut c = Command::new("bash");
    c.arg("-c")
        .arg(script)
        .arg("bash")
        .args(args)
        .env_clear()
        .env(
            "PATH",
            format!("{}:/usr/local/bin:/usr/bin:/bin", bin_dir().display()),
        )
        .env("HOME", &w.home)
        .env("LANG", "C.UTF-8")
        .env("FACTORY_ROOT", factory_root(w))
        .env("CLAUDE_SHARED_DIR", &w.shared)
        .env("DCI_SNIPPET", snippet_path())
        // The snippet passes `--agent-uid ${DISINTO_AGENT_UID:-1000}`; these worlds belong to
        // the user running the tests, who plays the agents here (tests/homes.rs covers 1000).
        .env("DISINTO_AGENT_UID", nix::unistd::geteuid().to_string())
        .stdin(std::process::Stdio::null());
    c
}

/// The profile is pinned with `--profile` (passed through by the function) so the test does not
/// depend on root's login shell.
fn profile_arg(w: &World) -> [String; 2] {
    ["--profile".into(), w.profile.to_str().unwrap().into()]
}

fn call(w: &World, extra: &[&str]) -> Run {
    let p = profile_arg(w);
    let mut args: Vec<&str> = vec![&p[0], &p[1]];
    args.extend_from_slice(extra);
    run(&mut caller(w, CALLER, &args))
}

#[track_caller]
fn assert_returned(r: &Run, code: i32) {
    assert_eq!(
        r.code, code,
        "function should return {code}\nstdout:\n{}\nstderr:\n{}",
        r.stdout, r.stderr
    );
    assert!(
        r.stdout.contains(&format!("function returned {code}\n")),
        "stdout:\n{}\nstderr:\n{}",
        r.stdout,
        r.stderr
    );
}

#[track_caller]
fn assert_said(r: &Run, what: &str) {
    assert!(
        r.stderr.contains(what),
        "expected on stderr: {what:?}\nstdout:\n{}\nstderr:\n{}",
        r.stdout,
        r.stderr
    );
}

fn status_layout(w: &World) -> String {
    let (code, doc) = run_json(w.cmd_sub("status").arg("--json"));
    assert_eq!(code, 0, "{doc:#}");
    doc["layout"].as_str().unwrap().to_string()
}

/// The checks every successful apply shares: the tool's own view (status, verify), the links,
/// the env file's entries, and the values exported into the calling shell.
#[track_caller]
fn assert_migrated(w: &World, r: &Run) {
    assert_eq!(status_layout(w), "migrated");
    let v = run(&mut w.cmd_sub("verify"));
    assert_eq!(v.code, 0, "verify: {}\n{}", v.stdout, v.stderr);
    assert_eq!(std::fs::read_link(w.claude()).unwrap(), w.config);
    assert_eq!(mode_of(&w.config), 0o700);
    let env = std::fs::read_to_string(&w.env_file).unwrap();
    let config = w.config.to_str().unwrap();
    let shared = w.shared.to_str().unwrap();
    assert!(
        env.contains(&format!("\nCLAUDE_CONFIG_DIR={config}\n")),
        "{env}"
    );
    assert!(
        env.contains(&format!("\nCLAUDE_SHARED_DIR={shared}\n")),
        "{env}"
    );
    assert!(
        env.contains("export FORGE_TOKEN=\"abc|def&ghi\"\n"),
        "{env}"
    );
    assert_eq!(mode_of(&w.env_file), 0o600);
    // The rest of `disinto init` sees the new values.
    assert!(
        r.stdout
            .contains(&format!("exported CLAUDE_CONFIG_DIR={config}\n")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains(&format!("exported CLAUDE_SHARED_DIR={shared}\n")),
        "{}",
        r.stdout
    );
    assert_said(
        r,
        &format!("Claude config is shared: CLAUDE_CONFIG_DIR={config}"),
    );
}

/// A second call on a migrated world returns 0 and touches nothing at all.
#[track_caller]
fn assert_second_call_changes_nothing(w: &World) {
    let before = w.manifest();
    let r = call(w, &[]);
    assert_returned(&r, 0);
    assert_same(&before, &w.manifest(), "a second disinto init");
}

#[test]
fn doc_includes_the_snippet_verbatim() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/disinto-init.md"))
            .unwrap();
    let sh = std::fs::read_to_string(snippet_path()).unwrap();
    assert!(
        doc.contains(&format!("```bash\n{sh}```\n")),
        "docs/disinto-init.md must contain docs/disinto-init.sh verbatim in a ```bash block"
    );
    assert!(doc.contains(r#"disinto-claude-init --yes --wait --env-file "$FACTORY_ROOT/.env""#));
    for code in 0..=6 {
        assert!(
            doc.contains(&format!("| {code} |")),
            "exit code {code} missing from the table"
        );
    }
    let r = run(Command::new("bash").arg("-n").arg(snippet_path()));
    assert_eq!(r.code, 0, "bash -n: {}", r.stderr);
}

#[test]
fn fresh_world_is_set_up() {
    let w = fixture_with_env("fresh");
    let r = call(&w, &[]);
    assert_returned(&r, 0);
    assert_migrated(&w, &r);
    let m = manifest(&w.config);
    assert_eq!(
        m.keys().cloned().collect::<Vec<_>>(),
        [b".".to_vec(), b".claude.json".to_vec()],
        "a fresh config dir holds only the {{}} .claude.json ~/.claude.json links to"
    );
    assert_eq!(std::fs::read(w.config.join(".claude.json")).unwrap(), b"{}");
    assert_second_call_changes_nothing(&w);
}

#[test]
fn legacy_world_is_migrated_even_with_a_stale_exported_config_dir() {
    let w = fixture_with_env("legacy");
    let claude_before = manifest(&w.claude());
    let json_before = std::fs::read(w.claude_json()).unwrap();
    // `disinto init` has sourced the old .env with `set -a`: CLAUDE_CONFIG_DIR=$HOME/.claude is
    // in its environment. The tool alone would stop on it (exit 2: the config dir overlaps
    // ~/.claude); the function must not pass it on.
    let p = profile_arg(&w);
    let stale = w.claude();
    let r = run(caller(&w, CALLER, &[&p[0], &p[1]]).env("CLAUDE_CONFIG_DIR", &stale));
    assert_returned(&r, 0);
    assert_migrated(&w, &r);
    assert_config_holds(&claude_before, &w.config, "config dir vs the old ~/.claude");
    assert_eq!(
        std::fs::read(w.config.join(".claude.json")).unwrap(),
        json_before
    );
    assert_second_call_changes_nothing(&w);
}

#[test]
fn legacy_world_with_plain_set_e_caller() {
    // The idiomatic caller: no `|| rc=$?`, just the call under `set -e`.
    let w = fixture_with_env("legacy");
    let script = r#"set -euo pipefail
. "$DCI_SNIPPET"
disinto_setup_claude_config "$@"
echo "init goes on"
"#;
    let p = profile_arg(&w);
    let r = run(&mut caller(&w, script, &[&p[0], &p[1]]));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.ends_with("init goes on\n"), "{}", r.stdout);
    assert_eq!(status_layout(&w), "migrated");

    // The same caller on a conflict stops init with the tool's code.
    let c = fixture_with_env("conflict");
    let before = c.manifest();
    let p = profile_arg(&c);
    let r = run(&mut caller(&c, script, &[&p[0], &p[1]]));
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    assert!(!r.stdout.contains("init goes on"), "{}", r.stdout);
    assert_same(&before, &c.manifest(), "conflict under set -e");
}

#[test]
fn migrated_world_is_completed_then_left_alone() {
    // The fixture has the links but not the env entries or the rc block: the first call adds
    // them and leaves the config dir itself exactly as it was.
    let w = fixture_with_env("migrated");
    let config_before = manifest(&w.config);
    let r = call(&w, &[]);
    assert_returned(&r, 0);
    assert_migrated(&w, &r);
    assert_same(&config_before, &manifest(&w.config), "the config dir");
    assert_second_call_changes_nothing(&w);
}

#[test]
fn conflict_stops_init_and_changes_nothing() {
    let w = fixture_with_env("conflict");
    let before = w.manifest();

    // Preview first, as `disinto init --dry-run` would.
    let r = call(&w, &["--dry-run"]);
    assert_returned(&r, 3);
    assert_said(&r, "the real run would stop here; nothing was changed");
    assert_said(&r, "hold files");
    assert_same(&before, &w.manifest(), "dry run on a conflict");

    let r = call(&w, &[]);
    assert_returned(&r, 3);
    // The tool's refusal (what, why, fix) and the function's instruction, both on stderr.
    assert_said(&r, "hold files");
    assert_said(&r, "fix: ");
    assert_said(&r, "needs a decision from you");
    assert_said(
        &r,
        "do what the 'fix:' line above says, then re-run disinto init",
    );
    assert!(
        r.stdout.contains("exported CLAUDE_CONFIG_DIR=\n"),
        "nothing exported on failure: {}",
        r.stdout
    );
    assert_same(&before, &w.manifest(), "refused conflict");
}

#[test]
fn dry_run_previews_and_changes_nothing() {
    let w = fixture_with_env("legacy");
    let before = w.manifest();
    let r = call(&w, &["--dry-run"]);
    assert_returned(&r, 0);
    assert_said(&r, "nothing was changed");
    assert!(r.stdout.contains("move-config"), "the plan: {}", r.stdout);
    assert_same(&before, &w.manifest(), "dry run");
    assert_eq!(status_layout(&w), "legacy");
}

#[test]
fn verify_problems_stop_init() {
    // A stale OAuth refresh lock next to the config dir (a Claude killed mid-refresh, long
    // ago): not a refusal, the move happens, and the final verify finds the problem.
    let w = fixture_with_env("legacy");
    let lock = w.shared.join("config.lock");
    mkdir(&lock, 0o755);
    set_mtime(&lock, 1_600_000_000, 0);
    let r = call(&w, &[]);
    assert_returned(&r, 5);
    assert_said(&r, "config.lock");
    assert_said(&r, "verify found problems");
    assert_said(&r, "then re-run disinto init");
    // Following the advice: fix, re-run.
    std::fs::remove_dir(&lock).unwrap();
    let r = call(&w, &[]);
    assert_returned(&r, 0);
    assert_migrated(&w, &r);
}

#[test]
fn usage_errors_and_missing_pieces() {
    let w = fixture_with_env("legacy");
    let before = w.manifest();

    // An option this tool does not know (an older binary than disinto expects).
    let r = call(&w, &["--no-such-option"]);
    assert_returned(&r, 2);
    assert_said(&r, "rejected its arguments");
    assert_said(&r, "--version");

    // No FACTORY_ROOT: the function cannot find the .env and says so.
    let p = profile_arg(&w);
    let r = run(caller(&w, CALLER, &[&p[0], &p[1]]).env_remove("FACTORY_ROOT"));
    assert_returned(&r, 2);
    assert_said(&r, "FACTORY_ROOT is not set");

    // Not installed.
    let r = run(caller(&w, CALLER, &[&p[0], &p[1]]).env("PATH", "/usr/bin:/bin"));
    assert_returned(&r, 127);
    assert_said(&r, "is not installed");

    assert_same(&before, &w.manifest(), "usage errors");
}

#[cfg(feature = "failpoints")]
#[test]
fn failure_rolled_back_stops_init() {
    let w = fixture_with_env("legacy");
    let before = w.manifest();
    let p = profile_arg(&w);
    let r =
        run(caller(&w, CALLER, &[&p[0], &p[1]])
            .env("DCI_FAILPOINTS", "apply-link-claude-json=error"));
    assert_returned(&r, 1);
    assert_said(&r, "failed and was rolled back; nothing was changed");
    assert_same(&before, &w.manifest(), "rolled back");
}

#[cfg(feature = "failpoints")]
#[test]
fn failed_rollback_says_stop_and_undo_recovers() {
    let w = fixture_with_env("legacy");
    let before = w.manifest();
    let p = profile_arg(&w);
    let r = run(caller(&w, CALLER, &[&p[0], &p[1]]).env(
        "DCI_FAILPOINTS",
        "apply-link-claude-json=error,undo-move-config=error",
    ));
    assert_returned(&r, 6);
    assert_said(&r, "STOP");
    assert_said(&r, "journal");
    assert_said(&r, "undo --yes");
    let journal = w.home.join(".local/state/disinto/claude-init/journal.json");
    assert!(journal.exists(), "the journal is kept for recovery");
    assert_said(&r, journal.to_str().unwrap());
    // The advice works: undo puts everything back exactly.
    let u = run(w.cmd_sub("undo").arg("--yes"));
    assert_eq!(u.code, 0, "undo: {}\n{}", u.stdout, u.stderr);
    assert_same(&before, &w.manifest(), "after undo");
}

#[test]
fn codes_the_real_tool_cannot_return_here() {
    // With --yes the tool never waits for a confirmation (4), and a kill gives 128+n: a stub
    // reaches those branches (DISINTO_CLAUDE_INIT names the binary to run).
    let w = fixture_with_env("legacy");
    let before = w.manifest();
    let stub_dir = tempfile::tempdir().unwrap();
    for (name, body) in [
        (
            "exit4",
            "#!/bin/sh\necho \"error: no confirmation\" >&2\nexit 4\n",
        ),
        ("killed", "#!/bin/sh\nkill -TERM $$\n"),
    ] {
        write_file(&stub_dir.path().join(name), body.as_bytes(), 0o755);
    }
    let p = profile_arg(&w);
    let r = run(caller(&w, CALLER, &[&p[0], &p[1]])
        .env("DISINTO_CLAUDE_INIT", stub_dir.path().join("exit4")));
    assert_returned(&r, 4);
    assert_said(&r, "did not get its confirmation; nothing was changed");
    let r = run(caller(&w, CALLER, &[&p[0], &p[1]])
        .env("DISINTO_CLAUDE_INIT", stub_dir.path().join("killed")));
    assert_returned(&r, 143);
    assert_said(&r, "ended with status 143");
    assert_same(&before, &w.manifest(), "stubs");
}
