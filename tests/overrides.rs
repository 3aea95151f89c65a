//! Issue 11, item 8's last loose ends, through the real binary on real filesystems:
//!
//! - a later `export CLAUDE_CONFIG_DIR=...` after the managed block (the user's own, or an old
//!   block's leftover whose start marker was deleted) is named, file and line, in the plan and by
//!   `verify` (`profile-overridden`, exit 5); the run leaves the line alone (nothing lost) and
//!   `undo` is exact;
//! - `verify` judges the env file as `migrate` does: an entry dotenvy reads right but bash reads
//!   with a carriage return is `env-file-stale` until `migrate` rewrites it, and then both agree.

mod common;

use common::*;
use disinto_claude_init::profile;
use std::path::Path;

use common::homes::{expect, migrate, undo, verify};

/// The problems' kinds in `verify --json`.
fn problem_kinds(w: &World) -> (i32, Vec<String>, serde_json::Value) {
    let (code, v) = run_json(w.cmd_sub("verify").arg("--json"));
    let kinds = v["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("no problems array: {v}"))
        .iter()
        .map(|p| p["kind"].as_str().unwrap().to_string())
        .collect();
    (code, kinds, v)
}

/// 1-based number of the line of `rc` that is exactly `line`, the last one.
fn line_no(rc: &[u8], line: &str) -> usize {
    let lines: Vec<&[u8]> = rc.split(|&b| b == b'\n').collect();
    1 + lines
        .iter()
        .rposition(|l| *l == line.as_bytes())
        .unwrap_or_else(|| panic!("no line {line:?} in {}", String::from_utf8_lossy(rc)))
}

/// One override scenario: `rc` is written, the plan must name `line` (its number in the file as
/// the run leaves it), migrate exits 5 with `profile-overridden` naming `<rc>:<n>`, every file
/// is still there, the user's line unchanged, and undo gives the world back byte for byte.
fn overridden(rc: &[u8], line: &str) {
    let w = World::new();
    build_realistic_home(&w.home);
    write_env_file(&w.env_file);
    write_file(&w.profile, rc, 0o644);
    let before = w.manifest();

    let plan = run(w.cmd().arg("--dry-run"));
    expect(&plan, 0, "dry run");
    assert_same(&before, &w.manifest(), "a dry run changes nothing");

    let m = migrate(&w);
    expect(&m, 5, "migrate over an overridden block");
    let after = std::fs::read(&w.profile).unwrap();
    let n = line_no(&after, line);
    let named = format!("{}:{n}: {line}", w.profile.display());
    assert!(
        plan.stdout.contains(&named) && plan.stdout.contains("profile-overridden"),
        "the plan names {named:?}:\n{}",
        plan.stdout
    );
    assert!(
        m.stderr.contains("problem:") && m.stderr.contains(&named),
        "migrate's problem names {named:?}:\n{}",
        m.stderr
    );
    // The user's line is theirs: still there, and the rc only gained the block.
    let block = profile::render_block(profile::ShellKind::Bash, &w.config);
    assert_eq!(
        profile::apply_block(rc, &block).as_deref().unwrap_or(rc),
        &after[..],
        "the rc file is the old one with the block in place, nothing else"
    );
    // Nothing lost: every file of ~/.claude is in the config dir with its bytes.
    let src: Vec<_> = before
        .iter()
        .filter_map(|(k, n)| {
            k.strip_prefix(b"tmp/home/user/.claude/")
                .map(|rest| (rest.to_vec(), n.clone()))
        })
        .collect();
    assert!(!src.is_empty(), "the home had files");
    let mid = w.manifest();
    let cfg_prefix = b"tmp/var/lib/disinto/claude-shared/config/";
    for (rest, node) in &src {
        let key = [&cfg_prefix[..], rest].concat();
        let got = mid
            .get(&key)
            .unwrap_or_else(|| panic!("{} lost", String::from_utf8_lossy(&key)));
        assert_eq!(
            format!("{:?}", got.kind),
            format!("{:?}", node.kind),
            "{}",
            String::from_utf8_lossy(&key)
        );
    }

    let (code, kinds, v) = problem_kinds(&w);
    assert_eq!(code, 5, "verify: {v}");
    assert_eq!(kinds, vec!["profile-overridden"], "{v}");
    let p = &v["problems"][0];
    assert!(
        p["fix"].as_str().unwrap().contains(&named),
        "the fix names the line: {p}"
    );

    expect(&undo(&w), 0, "undo");
    assert_same(&before, &w.manifest(), "undo is exact");
}

#[test]
fn a_users_later_export_is_named_in_the_plan_and_by_verify() {
    // An old complete block (the run puts the new one in its place), then the user's own line.
    let mut later = BASHRC_CONTENT.as_bytes().to_vec();
    later.extend_from_slice(&profile::render_block(
        profile::ShellKind::Bash,
        Path::new("/old/config"),
    ));
    later
        .extend_from_slice(b"alias cw='claude'\nexport CLAUDE_CONFIG_DIR=\"$HOME/.claude-work\"\n");
    overridden(&later, "export CLAUDE_CONFIG_DIR=\"$HOME/.claude-work\"");
}

#[test]
fn an_old_blocks_leftover_without_its_start_marker_is_named() {
    let mut rc = BASHRC_CONTENT.as_bytes().to_vec();
    rc.extend_from_slice(&profile::render_block(
        profile::ShellKind::Bash,
        Path::new("/old/config"),
    ));
    // A second old block whose start marker the user deleted: the run replaces the first,
    // complete block, and this leftover stays after it.
    let old = profile::render_block(profile::ShellKind::Bash, Path::new("/older/config"));
    let rest = &old[old.iter().position(|&b| b == b'\n').unwrap() + 1..];
    rc.extend_from_slice(b"\n");
    rc.extend_from_slice(rest);
    overridden(&rc, "export CLAUDE_CONFIG_DIR='/older/config'");
}

#[test]
fn without_an_override_there_is_no_note_and_verify_exits_0() {
    let w = World::realistic();
    let mut rc = std::fs::read(&w.profile).unwrap();
    // The user's own export *before* the block (the run appends it): the block wins.
    rc.extend_from_slice(b"export CLAUDE_CONFIG_DIR=/earlier\n");
    write_file(&w.profile, &rc, 0o644);
    let plan = run(w.cmd().arg("--dry-run"));
    expect(&plan, 0, "dry run");
    assert!(!plan.stdout.contains("override"), "{}", plan.stdout);
    expect(&migrate(&w), 0, "migrate");
    expect(&verify(&w), 0, "verify");
    let again = run(w.cmd().arg("--dry-run"));
    assert!(!again.stdout.contains("override"), "{}", again.stdout);
}

/// The env file as a healthy migrate left it, with `edit` applied to its bytes.
fn stale_env_case(what: &str, corrupt: impl Fn(&[u8]) -> Vec<u8>) {
    let w = World::realistic();
    expect(&migrate(&w), 0, "first migrate");
    expect(&verify(&w), 0, "verify after the first migrate");
    let good = std::fs::read(&w.env_file).unwrap();
    let bad = corrupt(&good);
    assert_ne!(bad, good, "{what}: the case changes the file");
    write_file(&w.env_file, &bad, 0o600);

    // dotenvy (the crate's reader) still reads both values right: the old verify said healthy.
    let v = disinto_claude_init::envfile::read_values(&bad).unwrap();
    assert_eq!(
        v.get("CLAUDE_SHARED_DIR").map(String::as_str),
        w.shared.to_str()
    );
    assert_eq!(
        v.get("CLAUDE_CONFIG_DIR").map(String::as_str),
        w.config.to_str()
    );

    let (code, kinds, v) = problem_kinds(&w);
    assert_eq!(code, 5, "{what}: verify before the fix: {v}");
    assert_eq!(kinds, vec!["env-file-stale"], "{what}: {v}");

    let before = w.manifest();
    expect(&migrate(&w), 0, "migrate fixes it");
    let fixed = std::fs::read(&w.env_file).unwrap();
    assert_ne!(fixed, bad, "{what}: migrate rewrote the env file");
    // Only the env file changed (and the journal that records it).
    let changed = diff(&before, &w.manifest(), Ignore::default());
    assert!(
        changed
            .iter()
            .any(|l| l.starts_with("changed tmp/factory/.env:"))
            && changed.iter().all(|l| l.starts_with("changed tmp/factory")
                || l.starts_with("changed tmp/home/user/.local/state/disinto/claude-init")),
        "{what}: only the env file changed: {changed:#?}"
    );
    expect(&verify(&w), 0, "verify after the fix");
    let mid = w.manifest();
    expect(&migrate(&w), 0, "second migrate");
    assert_same(&mid, &w.manifest(), "a second migrate changes nothing");
}

#[test]
fn an_lf_env_file_with_one_crlf_entry_is_stale_until_migrate_rewrites_it() {
    stale_env_case("one CRLF entry in an LF file", |good| {
        let text = String::from_utf8(good.to_vec()).unwrap();
        text.lines()
            .map(|l| {
                if l.starts_with("CLAUDE_SHARED_DIR=") {
                    format!("{l}\r\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect::<String>()
            .into_bytes()
    });
}

#[test]
fn a_crlf_env_file_without_a_final_newline_is_stale_until_migrate_rewrites_it() {
    stale_env_case("a CRLF file, no final newline", |good| {
        let text = String::from_utf8(good.to_vec()).unwrap();
        let out = text.lines().collect::<Vec<_>>().join("\r\n");
        assert!(!out.ends_with('\n') && out.contains("\r\nCLAUDE_CONFIG_DIR="));
        out.into_bytes()
    });
}
