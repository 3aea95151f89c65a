//! `undo` (issue 3): after a successful migration it restores the world byte for byte; it
//! refuses, changing nothing, to clobber an edit made since; it follows the confirmation rules.

mod common;

use common::*;
use serde_json::Value;

#[track_caller]
fn migrate_ok(w: &World) {
    let (code, doc) = run_json(w.cmd().args(["--yes", "--json"]));
    assert_eq!(code, 0, "migrate: {doc:#}");
    assert_eq!(doc["changed"], true, "{doc:#}");
}

/// `undo --yes` succeeds and the whole world is as `before`.
#[track_caller]
fn undo_restores(w: &World, before: &Manifest, what: &str) {
    let (code, doc) = undo_json(w, &["--yes"]);
    assert_eq!(code, 0, "{what}: {doc:#}");
    assert_same(before, &w.manifest(), what);
}

fn undo_json(w: &World, extra: &[&str]) -> (i32, Value) {
    run_json(w.cmd_sub("undo").arg("--json").args(extra))
}

fn undo_restores_everything(cross: bool) {
    let Some(w) = world(cross) else { return };
    let before = w.manifest();
    migrate_ok(&w);
    assert!(state_dir(&w).join("journal.json").is_file());
    let (code, doc) = undo_json(&w, &["--yes"]);
    assert_eq!(code, 0, "undo: {doc:#}");
    assert_eq!(doc["command"], "undo");
    assert_eq!(doc["changed"], true, "{doc:#}");
    assert_eq!(doc["error"], Value::Null, "{doc:#}");
    assert_eq!(doc["layout"], "legacy", "layout after undo: {doc:#}");
    for s in doc["steps"].as_array().unwrap() {
        assert_eq!(s["status"], "done", "{doc:#}");
    }
    assert_same(
        &before,
        &w.manifest(),
        &format!("undo after migrate (cross-device: {cross})"),
    );
    assert!(!w.home.join(".local").exists(), "state dir left behind");
    // A second undo: nothing to do.
    let (code, doc) = undo_json(&w, &["--yes"]);
    assert_eq!((code, &doc["changed"]), (0, &Value::from(false)), "{doc:#}");
    assert_same(&before, &w.manifest(), "second undo");
}

#[test]
fn undo_restores_the_world_same_filesystem() {
    undo_restores_everything(false);
}

#[test]
fn undo_restores_the_world_cross_device() {
    undo_restores_everything(true);
}

/// Files Claude wrote into the config dir after the migration go back with the rest.
#[test]
fn undo_keeps_what_claude_wrote_since() {
    for cross in [false, true] {
        let Some(w) = world(cross) else { continue };
        let before = w.manifest();
        migrate_ok(&w);
        let new_file = w
            .config
            .join("projects/-home-user-src-app/new-session.jsonl");
        write_file(&new_file, &transcript("new", 5000), 0o600);
        let creds = w.config.join(".credentials.json");
        write_file(
            &creds,
            br#"{"claudeAiOauth":{"refreshToken":"rotated"}}"#,
            0o600,
        );
        let m_new = manifest(&new_file)[&b"."[..]].clone();
        let m_creds = manifest(&creds)[&b"."[..]].clone();
        let (code, doc) = undo_json(&w, &["--yes"]);
        assert_eq!(code, 0, "{doc:#}");
        let after = w.manifest();
        // Compare everything except the two files and the directories they touched.
        let mut expect = before.clone();
        let key = |rel: &str| format!("tmp/home/user/.claude/{rel}").into_bytes();
        expect.insert(key("projects/-home-user-src-app/new-session.jsonl"), m_new);
        expect.insert(key(".credentials.json"), m_creds);
        assert_same_except(
            &expect,
            &after,
            Ignore {
                dir_mtime: true,
                ..Default::default()
            },
            &format!("undo after Claude ran (cross-device: {cross})"),
        );
    }
}

/// Edit the env file or the rc file after the migration: undo refuses (exit 3, changed-since),
/// shows the difference, and changes nothing at all.
#[test]
fn undo_refuses_to_clobber_an_edit() {
    for which in ["env", "rc"] {
        let w = World::realistic();
        migrate_ok(&w);
        let (path, line) = if which == "env" {
            (&w.env_file, "EDITED_AFTER=yes-by-the-operator")
        } else {
            (&w.profile, "alias edited-after='true'")
        };
        let mut bytes = std::fs::read(path).unwrap();
        bytes.extend_from_slice(format!("{line}\n").as_bytes());
        std::fs::write(path, &bytes).unwrap();
        let mid = w.manifest();
        let (code, doc) = undo_json(&w, &["--yes"]);
        assert_eq!(code, 3, "{which}: {doc:#}");
        assert_eq!(doc["error"]["kind"], "changed-since", "{which}: {doc:#}");
        let msg = doc["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(path.to_str().unwrap()),
            "{which}: names the file: {msg}"
        );
        // The env file's values may be tokens: its difference shows the key, not the value.
        let shown = if which == "env" {
            "+ EDITED_AFTER=(value not shown)".to_string()
        } else {
            format!("+ {line}")
        };
        assert!(msg.contains(&shown), "{which}: shows the difference: {msg}");
        assert!(
            which != "env" || !msg.contains("yes-by-the-operator"),
            "{which}: the env file's value is hidden: {msg}"
        );
        assert_eq!(doc["changed"], false, "{which}: {doc:#}");
        assert_same(&mid, &w.manifest(), &format!("refused undo ({which})"));
        // The human form says it too, on stderr.
        let r = run(w.cmd_sub("undo").arg("--yes"));
        assert_eq!(r.code, 3, "{which}: {}", r.stderr);
        assert!(r.stderr.contains(&shown), "{which}: {}", r.stderr);
        assert_same(
            &mid,
            &w.manifest(),
            &format!("refused undo ({which}, human)"),
        );
    }
}

#[test]
fn undo_without_a_journal_does_nothing() {
    // Never migrated.
    let w = World::realistic();
    let before = w.manifest();
    let (code, doc) = undo_json(&w, &["--yes"]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["changed"], false, "{doc:#}");
    assert_eq!(doc["error"], Value::Null, "{doc:#}");
    assert_same(&before, &w.manifest(), "undo with no journal");
    // Also without --yes: nothing to confirm.
    let (code, doc) = undo_json(&w, &[]);
    assert_eq!((code, &doc["changed"]), (0, &Value::from(false)), "{doc:#}");
    assert_same(&before, &w.manifest(), "undo with no journal, no --yes");
}

#[test]
fn undo_without_tty_or_yes_exits_4_unchanged() {
    let w = World::realistic();
    migrate_ok(&w);
    let mid = w.manifest();
    let r = run(&mut w.cmd_sub("undo"));
    assert_eq!(r.code, 4, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("--yes"), "{}", r.stderr);
    assert_same(&mid, &w.manifest(), "undo without confirmation");
    let (code, doc) = undo_json(&w, &[]);
    assert_eq!(code, 4, "{doc:#}");
    assert_eq!(doc["error"]["kind"], "not-confirmed", "{doc:#}");
    assert_same(&mid, &w.manifest(), "undo --json without confirmation");
}

#[test]
fn undo_dry_run_changes_nothing() {
    for cross in [false, true] {
        let Some(w) = world(cross) else { continue };
        migrate_ok(&w);
        let mid = w.manifest();
        let (code, doc) = undo_json(&w, &["--dry-run"]);
        assert_eq!(code, 0, "{doc:#}");
        assert_eq!(doc["dry_run"], true);
        assert_eq!(doc["changed"], false);
        let steps = doc["steps"].as_array().unwrap();
        assert!(
            steps.iter().any(|s| s["id"] == "move-config"),
            "the plan lists the steps to undo: {doc:#}"
        );
        assert!(steps.iter().all(|s| s["status"] == "planned"), "{doc:#}");
        assert_same(&mid, &w.manifest(), "undo --dry-run");
        let (code, _) = undo_json(&w, &["--dry-run", "--yes"]);
        assert_eq!(code, 0);
        assert_same(&mid, &w.manifest(), "undo --dry-run --yes");
    }
}

#[test]
fn migrate_again_after_undo() {
    for cross in [false, true] {
        let Some(w) = world(cross) else { continue };
        let before = w.manifest();
        let claude_before = manifest(&w.claude());
        migrate_ok(&w);
        let migrated = w.manifest();
        undo_restores(&w, &before, "first undo");
        // Again: the same result as the first time (paths, bytes, modes; times of the
        // directories the tool touched aside).
        let (code, doc) = run_json(w.cmd().args(["--yes", "--json"]));
        assert_eq!(code, 0, "second migrate: {doc:#}");
        assert_eq!(doc["layout"], "legacy");
        assert_config_holds(
            &claude_before,
            &w.config,
            "config dir after the second migrate",
        );
        // What the tool writes anew (the two links, the env and rc files, the journal) gets
        // the time of this run; everything else is as after the first migration.
        let written = [
            "tmp/factory/.env",
            "tmp/home/user/.bashrc",
            "tmp/home/user/.claude",
            "tmp/home/user/.claude.json",
            "tmp/home/user/.local/state/disinto/claude-init/journal.json",
        ];
        let strip = |mut m: Manifest| {
            for k in written {
                m.get_mut(k.as_bytes())
                    .unwrap_or_else(|| panic!("{k} missing"))
                    .mtime = (0, 0);
            }
            m
        };
        assert_same_except(
            &strip(migrated),
            &strip(w.manifest()),
            Ignore {
                dir_mtime: true,
                ..Default::default()
            },
            "second migrate vs first",
        );
        let r = run(w.cmd_sub("verify").arg("--json"));
        assert_eq!(r.code, 0, "{}", r.stdout);
        undo_restores(&w, &before, "second undo");
    }
}

/// A migration in two runs (the env file added later) is undone as a whole, newest first.
#[test]
fn undo_reverses_every_run() {
    let w = World::realistic();
    let before = w.manifest();
    let (code, doc) = run_json(w.cmd().args(["--yes", "--json", "--no-env-file"]));
    assert_eq!(code, 0, "{doc:#}");
    let (code, doc) = run_json(w.cmd().args(["--yes", "--json"]));
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(
        doc["changed"], true,
        "the env file is written by the second run: {doc:#}"
    );
    undo_restores(&w, &before, "undo of two runs");
}

/// Two runs that both wrote the env file (someone set a stale value in between): undo checks
/// the older write against what undoing the newer one puts back, and restores the original.
#[test]
fn undo_of_two_runs_that_both_wrote_the_env_file() {
    let w = World::realistic();
    migrate_ok(&w);
    // Between the runs, an operator puts a stale value back (this edit is part of the world
    // the second run starts from, so undo must restore exactly it, then the original).
    let migrated_env = std::fs::read(&w.env_file).unwrap();
    let mut stale = String::from_utf8(migrated_env.clone()).unwrap();
    let shared = w.shared.to_str().unwrap();
    stale = stale.replace(
        &format!("CLAUDE_SHARED_DIR={shared}\n"),
        "CLAUDE_SHARED_DIR=/stale\n",
    );
    assert_ne!(stale.as_bytes(), &migrated_env[..]);
    std::fs::write(&w.env_file, &stale).unwrap();
    let (code, doc) = run_json(w.cmd().args(["--yes", "--json"]));
    assert_eq!((code, &doc["changed"]), (0, &Value::Bool(true)), "{doc:#}");
    assert_eq!(std::fs::read(&w.env_file).unwrap(), migrated_env);

    let (code, doc) = undo_json(&w, &["--yes"]);
    assert_eq!(code, 0, "both runs undone: {doc:#}");
    assert_eq!(
        std::fs::read_to_string(&w.env_file).unwrap(),
        ENV_FILE_CONTENT
    );
    assert!(!state_dir(&w).exists(), "no journal left");
    assert!(std::fs::symlink_metadata(w.claude()).unwrap().is_dir());
}

/// A config dir that is a regular file is a conflict (exit 3), not an I/O failure.
#[test]
fn config_dir_that_is_a_file_is_a_conflict() {
    let w = World::realistic();
    std::fs::create_dir_all(&w.shared).unwrap();
    write_file(&w.config, b"not a dir\n", 0o644);
    let before = w.manifest();
    let (code, doc) = run_json(w.cmd().args(["--yes", "--json"]));
    assert_eq!(code, 3, "{doc:#}");
    assert_eq!(doc["layout"], "conflict");
    assert_eq!(doc["error"]["kind"], "conflict");
    let (code, doc) = run_json(w.cmd_sub("status").arg("--json"));
    assert_eq!(
        (code, &doc["layout"]),
        (0, &Value::from("conflict")),
        "{doc:#}"
    );
    assert_same(&before, &w.manifest(), "conflict refusal");
}
