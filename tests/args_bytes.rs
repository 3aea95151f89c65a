//! Arguments are bytes (issue 8): non-UTF-8 bytes in every option and as a stray argument, with
//! and without `--json`, give a clear usage error (exit 2; one JSON usage document with
//! `--json`), never a panic; a valid path that is not UTF-8 still works.

mod common;

use common::*;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

const BAD: &[u8] = b"bad\xff\xfename";

fn bad() -> OsString {
    OsStr::from_bytes(BAD).to_os_string()
}

fn bad_path() -> OsString {
    OsStr::from_bytes(b"/tmp/dci-no-such-\xff-dir").to_os_string()
}

/// Run the binary with `args` (RUST_BACKTRACE=1, so a panic could not hide its backtrace).
fn run_args(args: &[OsString]) -> Run {
    let w = World::new();
    run(w.cmd_bare().args(args).env("RUST_BACKTRACE", "1"))
}

/// Exit 2, a usage message on stderr naming what was wrong, no panic; with `--json`, one JSON
/// document on stdout whose error is a usage error for `command`.
#[track_caller]
fn assert_usage(args: &[OsString], command: &str, names: &str) {
    let what = format!("{args:?}");
    let r = run_args(args);
    assert_eq!(r.code, 2, "{what}: exit\n{}\n{}", r.stdout, r.stderr);
    for never in ["panicked", "stack backtrace", "RUST_BACKTRACE"] {
        assert!(!r.stderr.contains(never), "{what}: {never}:\n{}", r.stderr);
    }
    assert!(
        r.stderr.starts_with("error: "),
        "{what}: stderr:\n{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(names),
        "{what}: does not name {names:?}:\n{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("--help"),
        "{what}: no way forward:\n{}",
        r.stderr
    );
    if args.iter().any(|a| a == "--json") {
        let doc: serde_json::Value = serde_json::from_str(&r.stdout)
            .unwrap_or_else(|e| panic!("{what}: not one JSON document ({e}):\n{}", r.stdout));
        assert_eq!(doc["command"], command, "{what}: {doc:#}");
        assert_eq!(doc["exit_code"], 2, "{what}: {doc:#}");
        assert_eq!(doc["error"]["kind"], "usage", "{what}: {doc:#}");
        let msg = doc["error"]["message"].as_str().unwrap();
        assert!(msg.contains(names), "{what}: message {msg:?}");
        assert_eq!(doc["error"]["fix"], "disinto-claude-init --help", "{what}");
    } else {
        assert!(r.stdout.is_empty(), "{what}: stdout:\n{}", r.stdout);
    }
}

fn os(v: &[&str]) -> Vec<OsString> {
    v.iter().map(OsString::from).collect()
}

#[test]
fn a_stray_non_utf8_argument_is_a_usage_error() {
    for json in [false, true] {
        let j: &[&str] = if json { &["--json"] } else { &[] };
        // Where a subcommand could stand, then after each subcommand.
        let mut args = os(j);
        args.push(bad());
        assert_usage(&args, "migrate", "unrecognized subcommand");
        for sub in ["migrate", "status", "verify", "undo"] {
            let mut args = os(&[sub]);
            args.extend(os(j));
            args.push(bad());
            assert_usage(&args, sub, "unexpected argument");
        }
        // As an option name.
        let mut args = os(j);
        args.push(OsStr::from_bytes(b"--\xffjson").to_os_string());
        assert_usage(&args, "migrate", "unexpected argument");
    }
}

#[test]
fn non_utf8_bytes_in_every_option_never_panic() {
    let paths = [
        "--home",
        "--shared-dir",
        "--config-dir",
        "--env-file",
        "--profile",
    ];
    for json in [false, true] {
        let j: &[&str] = if json { &["--json"] } else { &[] };
        // A path option takes any bytes: the stray argument after it is what is refused.
        for opt in paths {
            let mut args = os(j);
            args.push(opt.into());
            args.push(bad_path());
            args.push(bad());
            assert_usage(&args, "migrate", "unrecognized subcommand");
            let mut eq = OsString::from(format!("{opt}="));
            eq.push(bad_path());
            let mut args = os(&["status"]);
            args.extend(os(j));
            args.push(eq);
            args.push(bad());
            assert_usage(&args, "status", "unexpected argument");
        }
        // Options that take text: the value itself is refused.
        let mut args = os(j);
        args.extend(os(&["--color"]));
        args.push(bad());
        assert_usage(&args, "migrate", "invalid value");
        let mut eq = OsString::from("--color=");
        eq.push(bad());
        let mut args = os(&["verify"]);
        args.extend(os(j));
        args.push(eq);
        assert_usage(&args, "verify", "invalid value");
        let mut args = os(j);
        args.push("completions".into());
        args.push(bad());
        assert_usage(&args, "completions", "invalid value");
        // Flags that take no value.
        for flag in [
            "--yes",
            "--dry-run",
            "--quiet",
            "--verbose",
            "--no-env-file",
        ] {
            let mut eq = OsString::from(format!("{flag}="));
            eq.push(bad());
            let mut args = os(j);
            args.push(eq);
            assert_usage(&args, "migrate", "unexpected value");
        }
    }
}

/// A home whose path is not UTF-8 migrates and undoes like any other, through the options.
#[test]
fn a_non_utf8_home_still_works() {
    let w = World::new();
    let home = w.root.join(OsStr::from_bytes(b"home/us\xffer"));
    mkdir(&home, 0o755);
    build_realistic_home(&home);
    write_env_file(&w.env_file);
    let profile = home.join(".bashrc");
    write_bashrc(&profile);
    let before = w.manifest();
    let claude_before = manifest(&home.join(".claude"));
    let args = |sub: &str| -> Vec<OsString> {
        let mut v = os(&[sub, "--home"]);
        v.push(home.clone().into());
        v.extend(os(&["--shared-dir"]));
        v.push(w.shared.clone().into());
        v.extend(os(&["--env-file"]));
        v.push(w.env_file.clone().into());
        v.extend(os(&["--profile"]));
        v.push(profile.clone().into());
        v.extend(os(&["--yes", "--json"]));
        v
    };
    let (code, doc) = run_json(w.cmd_bare().args(args("migrate")));
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(
        std::fs::read_link(home.join(".claude")).unwrap(),
        w.config,
        "~/.claude link"
    );
    assert_config_holds(&claude_before, &w.config, "config dir vs the old ~/.claude");
    let (code, doc) = run_json(w.cmd_bare().args(args("status")));
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["layout"], "migrated", "{doc:#}");
    let (code, doc) = run_json(w.cmd_bare().args(args("undo")));
    assert_eq!(code, 0, "{doc:#}");
    assert_same(&before, &w.manifest(), "undo of a non-UTF-8 home");
}
