//! Where things go: the precedence rules of docs/contract.md, observed through the real binary.

mod common;

use common::*;

fn status_json(cmd: &mut std::process::Command) -> serde_json::Value {
    let (code, doc) = run_json(cmd.args(["status", "--json"]));
    assert_eq!(code, 0, "{doc:#}");
    doc
}

#[test]
fn env_file_defaults_to_factory_root_then_dot_env_then_none() {
    let w = World::new();
    let factory = w.root.join("factory");
    // FACTORY_ROOT wins.
    let doc = status_json(
        w.cmd_bare()
            .arg("--home")
            .arg(&w.home)
            .env("FACTORY_ROOT", &factory)
            .current_dir(&w.home),
    );
    assert_eq!(doc["env_file"], factory.join(".env").to_str().unwrap());
    // Else ./.env when it exists.
    write_file(&w.home.join(".env"), b"X=1\n", 0o600);
    let doc = status_json(w.cmd_bare().arg("--home").arg(&w.home).current_dir(&w.home));
    assert_eq!(doc["env_file"], w.home.join(".env").to_str().unwrap());
    // Else none, and the plan says so by having no env step.
    std::fs::remove_file(w.home.join(".env")).unwrap();
    let (code, doc) = run_json(
        w.cmd_bare()
            .args(["--dry-run", "--json", "--home"])
            .arg(&w.home)
            .arg("--shared-dir")
            .arg(&w.shared)
            .current_dir(&w.home),
    );
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["env_file"], serde_json::Value::Null);
    assert!(!doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["id"] == "write-env-file"));
}

#[test]
fn directories_come_from_flag_then_environment_then_env_file_then_default() {
    let w = World::new();
    write_file(
        &w.env_file,
        b"CLAUDE_SHARED_DIR=/srv/from-file\nCLAUDE_CONFIG_DIR=${CLAUDE_SHARED_DIR}/cfg\n",
        0o600,
    );
    let base = || {
        let mut c = w.cmd_bare();
        c.arg("--home")
            .arg(&w.home)
            .arg("--env-file")
            .arg(&w.env_file);
        c
    };
    let doc = status_json(&mut base());
    assert_eq!(doc["shared_dir"], "/srv/from-file");
    assert_eq!(
        doc["config_dir"], "/srv/from-file/cfg",
        "${{}} references are resolved"
    );
    let doc = status_json(base().env("CLAUDE_SHARED_DIR", "/srv/from-env"));
    assert_eq!(doc["shared_dir"], "/srv/from-env");
    assert_eq!(doc["config_dir"], "/srv/from-env/config");
    let doc = status_json(
        base()
            .env("CLAUDE_SHARED_DIR", "/srv/from-env")
            .args(["--shared-dir", "/srv/from-flag"]),
    );
    assert_eq!(doc["shared_dir"], "/srv/from-flag");
    let doc = status_json(w.cmd_bare().arg("--home").arg(&w.home).arg("--no-env-file"));
    assert_eq!(doc["shared_dir"], "/var/lib/disinto/claude-shared");
    assert_eq!(doc["config_dir"], "/var/lib/disinto/claude-shared/config");
}

#[test]
fn a_stale_config_dir_in_the_env_file_is_not_taken_as_the_target() {
    let w = World::new();
    let stale = format!("CLAUDE_CONFIG_DIR={}\n", w.home.join(".claude").display());
    write_file(&w.env_file, stale.as_bytes(), 0o600);
    let doc = status_json(
        w.cmd_bare()
            .arg("--home")
            .arg(&w.home)
            .arg("--env-file")
            .arg(&w.env_file),
    );
    assert_eq!(doc["config_dir"], "/var/lib/disinto/claude-shared/config");
}

#[test]
fn bad_input_is_a_usage_error_that_changes_nothing() {
    let w = World::realistic();
    let before = w.manifest();
    for args in [
        vec!["--shared-dir", "relative/dir", "--yes"],
        vec!["--config-dir", "also/relative", "--yes"],
        vec!["--no-such-option"],
        vec!["completions", "tcsh"],
    ] {
        let r = run(w.cmd_bare().arg("--home").arg(&w.home).args(&args));
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(!r.stderr.is_empty());
    }
    let r = run(w
        .cmd_bare()
        .args(["--yes", "--home"])
        .arg(w.root.join("no/such/home")));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("--home"),
        "says what to pass: {}",
        r.stderr
    );
    let r = run(w
        .cmd_bare()
        .args(["--yes", "--home"])
        .arg(&w.home)
        .arg("--shared-dir")
        .arg(w.home.join(".claude/inside")));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_same(&before, &w.manifest(), "usage errors");
}

#[test]
fn fish_profile_gets_fish_syntax() {
    let w = World::new();
    build_realistic_home(&w.home);
    let fish = w.home.join(".config/fish/conf.d/disinto-claude.fish");
    let (code, doc) = run_json(
        w.cmd_bare()
            .args(["--yes", "--json", "--no-env-file", "--home"])
            .arg(&w.home)
            .arg("--shared-dir")
            .arg(&w.shared)
            .arg("--profile")
            .arg(&fish),
    );
    assert_eq!(code, 0, "{doc:#}");
    let text = std::fs::read_to_string(&fish).unwrap();
    assert!(
        text.contains(&format!(
            "set -gx CLAUDE_CONFIG_DIR '{}'",
            w.config.display()
        )),
        "{text}"
    );
    // undo removes the file and the directories it needed.
    let r = run(w
        .cmd_bare()
        .args(["undo", "--yes", "--no-env-file", "--home"])
        .arg(&w.home)
        .arg("--shared-dir")
        .arg(&w.shared));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        !w.home.join(".config").exists(),
        "created dirs are removed by undo"
    );
}
