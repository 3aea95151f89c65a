//! `completions <shell>`: every shell gets a script naming the options, and the scripts are
//! loaded into the real shells where those are installed (bash always; zsh and fish when
//! present, skipped with a printed reason otherwise) and asked to complete.

mod common;

use common::{run, BIN};
use std::path::Path;
use std::process::Command;

const SHELLS: &[&str] = &["bash", "zsh", "fish", "elvish", "powershell"];

/// Options every script must name (every option is global, so every shell lists them).
const OPTIONS: &[&str] = &[
    "--home",
    "--shared-dir",
    "--config-dir",
    "--env-file",
    "--no-env-file",
    "--profile",
    "--no-modify-profile",
    "--yes",
    "--dry-run",
    "--json",
    "--quiet",
    "--verbose",
    "--color",
];

const SUBCOMMANDS: &[&str] = &["migrate", "status", "verify", "undo", "completions"];

/// The script for `shell`, from the real binary, with no environment that could change it.
fn script(shell: &str) -> String {
    let r = run(Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args(["completions", shell])
        .stdin(std::process::Stdio::null()));
    assert_eq!(r.code, 0, "completions {shell}: stderr:\n{}", r.stderr);
    assert!(
        r.stderr.is_empty(),
        "completions {shell} wrote to stderr:\n{}",
        r.stderr
    );
    r.stdout
}

/// Write the script to a file in a tempdir (kept alive by the returned guard).
fn script_file(shell: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("disinto-claude-init.{shell}"));
    std::fs::write(&path, script(shell)).unwrap();
    (dir, path)
}

fn installed(prog: &str) -> bool {
    Command::new(prog)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn every_shell_gets_a_script_naming_every_option_and_subcommand() {
    for shell in SHELLS {
        let s = script(shell);
        assert!(
            s.len() > 500,
            "completions {shell}: suspiciously short:\n{s}"
        );
        for opt in OPTIONS {
            // fish spells long options `-l name`.
            let spelled = if *shell == "fish" {
                format!("-l {}", &opt[2..])
            } else {
                opt.to_string()
            };
            assert!(s.contains(&spelled), "completions {shell}: no {spelled}");
        }
        for sub in SUBCOMMANDS {
            assert!(s.contains(sub), "completions {shell}: no subcommand {sub}");
        }
        assert!(
            s.contains("disinto-claude-init"),
            "completions {shell}: does not name the binary"
        );
    }
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let r = run(Command::new(BIN)
        .args(["completions", "tcsh"])
        .stdin(std::process::Stdio::null()));
    assert_eq!(r.code, 2, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert!(r.stdout.is_empty(), "stdout: {}", r.stdout);
    assert!(r.stderr.contains("tcsh"), "stderr: {}", r.stderr);
}

/// Source the bash script in a clean non-interactive bash and run `body` after it.
fn bash_with(script: &Path, body: &str) -> (i32, String, String) {
    let out = Command::new("bash")
        .arg("--norc")
        .arg("--noprofile")
        .arg("-c")
        .arg(format!(
            "set -u\nsource \"$1\" || exit 90\n\
             fn=$(complete -p disinto-claude-init | sed -E 's/.* -F ([^ ]+) .*/\\1/')\n\
             [ -n \"$fn\" ] || exit 91\n\
             # complete WORDS... : run the completion function as bash would for the last word\n\
             comp() {{ COMP_WORDS=(\"$@\"); COMP_CWORD=$(( $# - 1 )); COMP_LINE=\"$*\"; \
             COMP_POINT=${{#COMP_LINE}}; COMPREPLY=(); \
             \"$fn\" disinto-claude-init \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\"; }}\n{body}"
        ))
        .arg("bash")
        .arg(script)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .expect("run bash");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Completions bash offers for the words (the last one being completed).
fn bash_complete(script: &Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words
        .iter()
        .map(|w| format!("'{}'", w.replace('\'', "'\\''")))
        .collect();
    let (code, out, err) = bash_with(script, &format!("comp {}", quoted.join(" ")));
    assert_eq!(code, 0, "bash completion of {words:?} failed:\n{err}");
    out.lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_registers_the_completion() {
    let (_d, path) = script_file("bash");
    let (code, out, err) = bash_with(&path, "complete -p disinto-claude-init");
    assert_eq!(code, 0, "sourcing the bash script failed:\n{err}");
    assert!(
        out.starts_with("complete ") && out.trim_end().ends_with(" disinto-claude-init"),
        "complete -p: {out}"
    );
    assert!(err.is_empty(), "bash wrote to stderr:\n{err}");
}

#[test]
fn bash_completes_options_subcommands_and_values() {
    let (_d, path) = script_file("bash");
    let top = bash_complete(&path, &["disinto-claude-init", ""]);
    for w in OPTIONS.iter().chain(SUBCOMMANDS) {
        assert!(top.iter().any(|c| c == w), "top level lacks {w}: {top:?}");
    }
    assert_eq!(
        bash_complete(&path, &["disinto-claude-init", "--sh"]),
        ["--shared-dir"]
    );
    assert_eq!(
        bash_complete(&path, &["disinto-claude-init", "--color", ""]),
        ["auto", "always", "never"]
    );
}

/// The options are global: after a subcommand they must still complete. (clap_complete's bash
/// generator misspells the case labels of subcommands when the binary name has a hyphen,
/// clap-rs/clap#6421, so nothing completes after `status`; the binary must work around it.)
#[test]
fn bash_completes_after_a_subcommand() {
    let (_d, path) = script_file("bash");
    assert_eq!(
        bash_complete(&path, &["disinto-claude-init", "status", "--sh"]),
        ["--shared-dir"],
        "bash: `disinto-claude-init status --sh<TAB>` completes nothing (clap-rs/clap#6421: \
         the generated case labels read disinto__subcmd__claude__subcmd__init...)"
    );
    assert_eq!(
        bash_complete(&path, &["disinto-claude-init", "undo", "--dr"]),
        ["--dry-run"]
    );
    let shells = bash_complete(&path, &["disinto-claude-init", "completions", ""]);
    for s in SHELLS {
        assert!(
            shells.iter().any(|c| c == s),
            "`completions <TAB>` lacks {s}: {shells:?}"
        );
    }
}

#[test]
fn zsh_loads_the_completion() {
    if !installed("zsh") {
        skip!("zsh is not installed");
    }
    let (d, path) = script_file("zsh");
    let syntax = Command::new("zsh").arg("-n").arg(&path).output().unwrap();
    assert!(
        syntax.status.success(),
        "zsh -n: {}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    // compinit, then source the script: it must register itself for the binary.
    let out = Command::new("zsh")
        .arg("-f")
        .arg("-c")
        .arg("autoload -U compinit && compinit -u -d \"$2\" && source \"$1\" && print -r -- \"$_comps[disinto-claude-init]\"")
        .arg(&path)
        .arg(&path)
        .arg(d.path().join("zcompdump"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", d.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim() == "_disinto-claude-init",
        "zsh did not register the completion: status {}, stdout {stdout:?}, stderr {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn fish_completes() {
    if !installed("fish") {
        skip!("fish is not installed");
    }
    let (d, path) = script_file("fish");
    let complete = |line: &str| -> Vec<String> {
        let out = Command::new("fish")
            .arg("--no-config")
            .arg("-c")
            .arg("source $argv[1]; and complete -C $argv[2]")
            .arg(&path)
            .arg(line)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", d.path())
            .env("XDG_CONFIG_HOME", d.path())
            .env("XDG_DATA_HOME", d.path())
            .current_dir(d.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "fish: complete -C {line:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split('\t').next().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(complete("disinto-claude-init --sh"), ["--shared-dir"]);
    assert_eq!(complete("disinto-claude-init status --dr"), ["--dry-run"]);
    let subs = complete("disinto-claude-init ");
    for s in SUBCOMMANDS {
        assert!(subs.iter().any(|c| c == s), "fish lacks {s}: {subs:?}");
    }
    let mut colors = complete("disinto-claude-init verify --color ");
    colors.sort();
    assert_eq!(colors, ["always", "auto", "never"]);
}
