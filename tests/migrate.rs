//! End-to-end: the real binary migrating real worlds (docs/contract.md, issue "end to end").

mod common;

use common::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Manifest of `.claude` before, taken from the home.
fn claude_manifest(w: &World) -> Manifest {
    manifest(&w.claude())
}

fn env_value(file: &Path, key: &str) -> Option<String> {
    let bytes = std::fs::read(file).unwrap();
    dotenvy::from_read_iter(&bytes[..])
        .map(|r| r.unwrap())
        .filter(|(k, _)| k == key)
        .last()
        .map(|(_, v)| v)
}

fn bash_value(file: &Path, key: &str) -> String {
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("set -a; . \"$1\"; printf %s \"${key}\""))
        .arg("bash")
        .arg(file)
        .env_clear()
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bash failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The whole acceptance path on one world: migrate, compare, verify, second run.
fn full_migration(w: &World) {
    let claude_before = claude_manifest(w);
    let claude_json_before = std::fs::read(w.claude_json()).unwrap();
    let env_mode_before = mode_of(&w.env_file);

    let (code, doc) = run_json(w.cmd().args(["--yes", "--json"]));
    assert_eq!(code, 0, "migrate failed: {doc:#}");
    assert_eq!(doc["layout"], "legacy");
    assert_eq!(doc["changed"], true);
    assert_eq!(doc["error"], serde_json::Value::Null);
    let ids: Vec<&str> = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"move-config") && ids.contains(&"verify"),
        "{ids:?}"
    );

    // The config dir holds exactly what ~/.claude held (its own mode aside: 0700 now).
    let config_after =
        assert_config_holds(&claude_before, &w.config, "config dir vs old ~/.claude");
    let root_before = &claude_before[&b"."[..]];
    let root_after = &config_after[&b"."[..]];
    assert_eq!(root_after.mode, 0o700, "config dir must end 0700");
    assert_eq!(
        root_after.mtime, root_before.mtime,
        "config dir keeps ~/.claude's mtime"
    );
    assert_eq!(
        std::fs::metadata(&w.config).unwrap().uid(),
        std::fs::metadata(&w.home).unwrap().uid()
    );

    // ~/.claude is a link to the config dir; ~/.claude.json moved and linked back.
    assert_eq!(std::fs::read_link(w.claude()).unwrap(), w.config);
    assert_eq!(
        std::fs::read_link(w.claude_json()).unwrap(),
        w.config.join(".claude.json")
    );
    assert_eq!(
        std::fs::read(w.config.join(".claude.json")).unwrap(),
        claude_json_before
    );
    assert!(!std::fs::symlink_metadata(w.config.join(".claude.json"))
        .unwrap()
        .file_type()
        .is_symlink());

    // The env file: both entries, readable by dotenvy and bash, other bytes unchanged, mode kept.
    let shared = w.shared.to_str().unwrap();
    let config = w.config.to_str().unwrap();
    assert_eq!(
        env_value(&w.env_file, "CLAUDE_SHARED_DIR").as_deref(),
        Some(shared)
    );
    assert_eq!(
        env_value(&w.env_file, "CLAUDE_CONFIG_DIR").as_deref(),
        Some(config)
    );
    assert_eq!(bash_value(&w.env_file, "CLAUDE_CONFIG_DIR"), config);
    assert_eq!(bash_value(&w.env_file, "FORGE_TOKEN"), "abc|def&ghi");
    assert_eq!(mode_of(&w.env_file), env_mode_before);
    let env_now = std::fs::read_to_string(&w.env_file).unwrap();
    let expected = ENV_FILE_CONTENT.replace(
        "CLAUDE_CONFIG_DIR=/home/user/.claude\n",
        &format!("CLAUDE_CONFIG_DIR={config}\n"),
    ) + &format!("CLAUDE_SHARED_DIR={shared}\n");
    assert_eq!(
        env_now, expected,
        "only the stale line is replaced and the missing one appended"
    );

    // One marked block in the rc file, which an interactive bash reads.
    let rc = std::fs::read_to_string(&w.profile).unwrap();
    assert_eq!(rc.matches(">>> disinto-claude-init >>>").count(), 1, "{rc}");
    assert!(
        rc.starts_with(BASHRC_CONTENT),
        "the rest of the rc file is unchanged"
    );

    // Nothing of the tool's own in the config dir; the journal in the home's state dir, 0700.
    let state = w.home.join(".local/state/disinto/claude-init");
    assert_eq!(
        std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert!(state.join("journal.json").exists());

    // verify: healthy.
    let r = run(w.cmd_sub("verify").arg("--json"));
    assert_eq!(r.code, 0, "verify: {}\n{}", r.stdout, r.stderr);

    // A second run: migrated, changed false, touches nothing.
    let world_before = w.manifest();
    let (code, doc) = run_json(w.cmd().args(["--yes", "--json"]));
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["layout"], "migrated");
    assert_eq!(doc["changed"], false);
    assert_same(
        &world_before,
        &w.manifest(),
        "second run must touch nothing",
    );
}

#[test]
fn legacy_home_migrates_on_one_filesystem() {
    let w = World::realistic();
    full_migration(&w);
}

#[test]
fn legacy_home_migrates_across_filesystems() {
    let Some(w) = World::realistic_cross_device() else {
        return;
    };
    full_migration(&w);
}

#[test]
fn same_filesystem_move_is_a_rename() {
    let w = World::realistic();
    let ino = std::fs::metadata(w.claude()).unwrap().ino();
    let (code, doc) = run_json(w.cmd().args(["--yes", "--json"]));
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(
        std::fs::metadata(&w.config).unwrap().ino(),
        ino,
        "a rename keeps the inode"
    );
    let mv = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "move-config")
        .unwrap();
    assert!(mv["summary"].as_str().unwrap().contains("rename"), "{mv}");
}

#[test]
fn dry_run_changes_nothing_in_any_layout() {
    for (name, want) in [
        ("fresh", 0),
        ("legacy", 0),
        ("migrated", 0),
        ("adopt", 0),
        ("conflict", 3),
        ("foreign-symlink", 3),
        ("dangling-symlink", 0),
        ("not-a-directory", 3),
    ] {
        let w = load_fixture(name);
        write_env_file(&w.env_file);
        let before = w.manifest();
        let (code, doc) = run_json(w.cmd().args(["--dry-run", "--json"]));
        assert_eq!(code, want, "{name}: {doc:#}");
        assert_eq!(doc["layout"], name, "{name}");
        assert_eq!(doc["dry_run"], true);
        assert_eq!(doc["changed"], false);
        assert_same(&before, &w.manifest(), &format!("--dry-run on {name}"));
        if want == 3 {
            assert!(
                doc["error"]["message"].as_str().unwrap().len() > 20,
                "{doc:#}"
            );
        }
    }
}

#[test]
fn refused_layouts_exit_3_and_touch_nothing() {
    for name in ["conflict", "foreign-symlink", "not-a-directory"] {
        let w = load_fixture(name);
        let before = w.manifest();
        let r = run(w.cmd().arg("--yes"));
        assert_eq!(r.code, 3, "{name}: {}", r.stderr);
        assert!(
            r.stderr.contains("fix:"),
            "{name}: the refusal says what to do: {}",
            r.stderr
        );
        assert_same(&before, &w.manifest(), &format!("refused {name}"));
    }
}

#[test]
fn no_tty_and_no_yes_exits_4_untouched() {
    let w = World::realistic();
    let before = w.manifest();
    let r = run(&mut w.cmd());
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("--yes"), "{}", r.stderr);
    assert_same(&before, &w.manifest(), "no confirmation");
}

#[test]
fn every_fixture_layout_migrates_or_refuses() {
    for (name, want) in [
        ("fresh", 0),
        ("legacy", 0),
        ("migrated", 0),
        ("adopt", 0),
        ("dangling-symlink", 0),
    ] {
        let w = load_fixture(name);
        let (code, doc) =
            run_json(
                w.cmd()
                    .args(["--yes", "--json", "--no-env-file", "--no-modify-profile"]),
            );
        assert_eq!(code, want, "{name}: {doc:#}");
        assert_eq!(std::fs::read_link(w.claude()).unwrap(), w.config, "{name}");
        let m = std::fs::metadata(&w.config).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o700, "{name}");
        let (code, doc) =
            run_json(
                w.cmd()
                    .args(["--yes", "--json", "--no-env-file", "--no-modify-profile"]),
            );
        assert_eq!(
            (code, &doc["changed"], &doc["layout"]),
            (0, &serde_json::json!(false), &serde_json::json!("migrated")),
            "{name} rerun"
        );
    }
}

#[test]
fn shared_dir_with_shell_metacharacters_round_trips_through_env_and_rc() {
    // The predecessor edited .env with sed and broke on `|` and `&` (docs/design.md, "the predecessor").
    let w = World::realistic();
    // (No `'` here: with a `$` it has no spelling bash, dotenvy and docker compose all read,
    // and is refused with exit 2; tests/env_readers.rs covers `'` alone and that refusal.)
    let odd = w.root.join("var/lib/disinto/sh|a&red $dir #1 \"q\"");
    let (code, doc) = run_json(
        w.cmd()
            .arg("--shared-dir")
            .arg(&odd)
            .args(["--yes", "--json"]),
    );
    assert_eq!(code, 0, "{doc:#}");
    let config = odd.join("config");
    assert_eq!(std::fs::read_link(w.claude()).unwrap(), config);
    let want = config.to_str().unwrap();
    assert_eq!(
        env_value(&w.env_file, "CLAUDE_CONFIG_DIR").as_deref(),
        Some(want)
    );
    assert_eq!(bash_value(&w.env_file, "CLAUDE_CONFIG_DIR"), want);
    assert_eq!(
        bash_value(&w.env_file, "CLAUDE_SHARED_DIR"),
        odd.to_str().unwrap()
    );
    // The rc block, read by a real (interactive, since the rc returns early otherwise) bash.
    let out = std::process::Command::new("bash")
        .args(["--norc", "-i", "-c"])
        .arg("source \"$1\" >/dev/null 2>&1; printf %s \"$CLAUDE_CONFIG_DIR\"")
        .arg("bash")
        .arg(&w.profile)
        .env_clear()
        .env("HOME", &w.home)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
    let r = run(w.cmd().arg("--shared-dir").arg(&odd).arg("verify"));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
}
