//! The man page docs/disinto-claude-init.1 is generated from the clap definitions by
//! `cargo run --example gen-man > docs/disinto-claude-init.1`; this test regenerates it in memory
//! and fails when the checked-in copy is stale, then renders it with the real man/groff.

mod common;
#[path = "../examples/gen-man.rs"]
mod gen_man;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const REFRESH: &str = "cargo run --example gen-man > docs/disinto-claude-init.1";

fn page_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/disinto-claude-init.1")
}

fn checked_in() -> Vec<u8> {
    std::fs::read(page_path()).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}\nGenerate it with: {REFRESH}",
            page_path().display()
        )
    })
}

#[test]
fn checked_in_man_page_is_current() {
    let fresh = gen_man::man_page();
    let old = checked_in();
    if fresh != old {
        let (f, o) = (
            String::from_utf8_lossy(&fresh),
            String::from_utf8_lossy(&old),
        );
        let first = f
            .lines()
            .zip(o.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| f.lines().count().min(o.lines().count()));
        panic!(
            "docs/disinto-claude-init.1 is stale (the clap definitions changed). Refresh it with:\n\n    {REFRESH}\n\n\
             first difference at line {}:\n  checked in: {:?}\n  generated:  {:?}",
            first + 1,
            o.lines().nth(first).unwrap_or("<end of file>"),
            f.lines().nth(first).unwrap_or("<end of file>"),
        );
    }
}

#[test]
fn man_page_names_every_option_and_command() {
    let page = String::from_utf8(checked_in()).expect("the page is UTF-8");
    for opt in [
        "home",
        "shared\\-dir",
        "config\\-dir",
        "env\\-file",
        "no\\-env\\-file",
        "profile",
        "no\\-modify\\-profile",
        "yes",
        "dry\\-run",
        "json",
        "quiet",
        "verbose",
        "color",
    ] {
        assert!(
            page.contains(&format!("\\fB\\-\\-{opt}\\fR")),
            "the man page does not document --{opt}"
        );
    }
    for section in [
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH OPTIONS",
        ".SH COMMANDS",
        ".SH \"EXIT STATUS\"",
        ".SH ENVIRONMENT",
        ".SH FILES",
        ".SH EXAMPLES",
    ] {
        assert!(page.contains(section), "no {section}");
    }
    for sub in ["migrate", "status", "verify", "undo", "completions"] {
        assert!(
            page.contains(&format!(".TP\n\\fB{sub}")),
            "the man page does not list the {sub} command"
        );
    }
    // One page: no references to per-subcommand pages that are not shipped.
    assert!(
        !page.contains("disinto\\-claude\\-init\\-migrate(1)"),
        "the page points at disinto-claude-init-migrate(1), which does not exist"
    );
    for code in 0..=6 {
        assert!(
            page.contains(&format!(".TP\n\\fB{code}\\fR\n")),
            "EXIT STATUS lacks {code}"
        );
    }
}

fn have(prog: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {prog}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn groff_renders_the_page_without_warnings() {
    if !have("groff") {
        skip!("groff is not installed");
    }
    let out = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .arg(page_path())
        .stdin(Stdio::null())
        .output()
        .expect("run groff");
    assert!(out.status.success(), "groff failed: {out:?}");
    assert!(
        out.stderr.is_empty(),
        "groff warned:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn man_renders_the_page() {
    if !have("man") {
        skip!("man is not installed");
    }
    let out = Command::new("man")
        .arg("-l")
        .arg(page_path())
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .env("MANWIDTH", "80")
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null())
        .output()
        .expect("run man");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "man -l failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // man may emit overstrike bold when it thinks it is on a terminal; strip it.
    let plain: String = {
        let mut s = String::new();
        for c in text.chars() {
            if c == '\u{8}' {
                s.pop();
            } else {
                s.push(c);
            }
        }
        s
    };
    for want in [
        "disinto-claude-init - ",
        "--shared-dir <DIR>",
        "--dry-run",
        "EXIT STATUS",
        "completions <bash|elvish|fish|powershell|zsh>",
    ] {
        assert!(
            plain.contains(want),
            "man -l output lacks {want:?}:\n{plain}"
        );
    }
    let widest = plain.lines().map(|l| l.chars().count()).max().unwrap_or(0);
    assert!(
        widest <= 80,
        "a rendered line is {widest} columns wide at MANWIDTH=80"
    );
}
