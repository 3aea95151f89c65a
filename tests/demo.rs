//! scripts/demo.sh (issue 4): runs the whole tour with the built binary (DCI_BIN, so no rebuild)
//! and checks that every step ran, that it stays inside its sandbox whatever the caller's
//! environment says, and that the sandbox is gone afterwards.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

#[test]
fn demo_walks_the_whole_tool_inside_its_sandbox() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/demo.sh");
    // Decoys for everything that could steer the tool out of the sandbox: a "real" home with a
    // ~/.claude and a factory .env, which must not change, and a migrated user's
    // CLAUDE_SHARED_DIR / CLAUDE_CONFIG_DIR, FACTORY_ROOT and XDG_STATE_HOME under a regular
    // file, so that any use of them fails the demo at once (undo would otherwise put back even
    // a directory's mtime and leave no trace to find afterwards).
    let decoy = tempfile::Builder::new()
        .prefix("dci-demo-decoy.")
        .tempdir()
        .unwrap();
    let d = decoy.path();
    let real_home = d.join("realhome");
    write_file(
        &real_home.join(".claude/.credentials.json"),
        b"{\"real\":true}\n",
        0o600,
    );
    write_file(&real_home.join(".claude.json"), b"{}\n", 0o600);
    write_file(&real_home.join(".bashrc"), BASHRC_CONTENT.as_bytes(), 0o644);
    write_env_file(&d.join("factory/.env"));
    write_file(&d.join("notadir"), b"decoy\n", 0o644);
    let nowhere = d.join("notadir");
    // The sandbox's parent, apart: its own mtime changes when the sandbox comes and goes.
    let tmp = tempfile::Builder::new()
        .prefix("dci-demo-tmp.")
        .tempdir()
        .unwrap();
    let before = manifest(d);

    let t = Instant::now();
    let r = run(Command::new("bash")
        .arg(&script)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LANG", "C.UTF-8")
        .env("DCI_BIN", BIN)
        .env("HOME", &real_home)
        .env("TMPDIR", tmp.path())
        .env("CLAUDE_CONFIG_DIR", nowhere.join("shared/config"))
        .env("CLAUDE_SHARED_DIR", nowhere.join("shared"))
        .env("FACTORY_ROOT", nowhere.join("factory"))
        .env("XDG_STATE_HOME", nowhere.join("state"))
        .env("SUDO_USER", "nobody")
        .stdin(Stdio::null()));
    let took = t.elapsed();
    eprintln!("demo took {took:?}");
    assert_eq!(
        r.code, 0,
        "demo failed\nstdout:\n{}\nstderr:\n{}",
        r.stdout, r.stderr
    );

    // Every step ran, in order (the script is `set -e`: a failing step stops it).
    let mut at = 0;
    for line in [
        "==> A sandbox home in ",
        "==> 1. status",
        "$ disinto-claude-init status",
        "layout: legacy",
        "==> 2. a dry run",
        "$ disinto-claude-init --dry-run",
        "==> 3. the migration",
        "$ disinto-claude-init --yes",
        "~/.claude is now a link:",
        "==> 4. verify",
        "$ disinto-claude-init verify",
        "verify: healthy",
        "==> 5. status after",
        "layout: migrated",
        "==> 6. undo",
        "$ disinto-claude-init undo --yes",
        "==> 7. status: back where we started",
        "layout: legacy",
        "every file, mode, mtime and link in the sandbox is as it was before step 3",
        "==> Done.",
    ] {
        match r.stdout[at..].find(line) {
            Some(i) => at += i + line.len(),
            None => panic!("missing (in order) {line:?}\nstdout:\n{}", r.stdout),
        }
    }
    // The demo's home links CLAUDE.md into a dotfiles repo (absolute): verify names that link,
    // which containers cannot follow; nothing else warns.
    let unexpected: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("warning:") && !l.contains("outside the shared dir"))
        .collect();
    assert!(
        unexpected.is_empty(),
        "no other warnings in the demo: {}",
        r.stderr
    );

    // The tool saw none of the decoys: everything is exactly as it was, the sandbox is gone.
    assert_same(
        &before,
        &manifest(d),
        "the caller's home, factory and state dir",
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "sandbox left in TMPDIR: {left:?}");
    assert!(
        took.as_secs() < 60,
        "the demo should take seconds, took {took:?}"
    );
}
