//! Real homes for `tests/homes.rs`: a GNU-stow-style `~/.claude` whose links leave the tree,
//! loose credentials, Docker's empty directory at `~/.claude.json`, Claude Code's OAuth lock,
//! and a home owned by a non-root uid (the agents' 1000). Built with plain std and nix calls,
//! independent of the crate under test.

use super::*;
use std::os::unix::fs::MetadataExt;

/// The uid disinto's images run agents as, and the owner of the homes built here.
pub const AGENT_UID: u32 = 1000;

/// `chown -hR uid:gid path` (links themselves, never followed).
pub fn chown_r(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("lchown {}: {e}", path.display()));
    let m = fs::symlink_metadata(path).unwrap();
    if m.is_dir() {
        for e in fs::read_dir(path).unwrap() {
            chown_r(&e.unwrap().path(), uid, gid);
        }
    }
}

/// The links of the stow-style home, relative to `~/.claude`: (path, text). The first four
/// leave the tree; the rest stay inside (or are absolute) and must keep their text.
pub const STOW_LINKS: &[(&str, &str)] = &[
    ("CLAUDE.md", "../dotfiles/claude/CLAUDE.md"),
    ("commands", "../dotfiles/claude/commands"),
    (
        "agents/reviewer.md",
        "../../dotfiles/claude/agents/reviewer.md",
    ),
    (
        "settings.local.json",
        "./../dotfiles/claude//settings.local.json",
    ),
    (
        "local/node_modules/.bin/claude",
        "../@anthropic-ai/claude-code/cli.js",
    ),
    ("todos/latest.json", "gone-session.json"),
];
/// How many of `STOW_LINKS` leave the tree.
pub const STOW_LEAVING: usize = 4;

/// A legacy home as GNU stow leaves it: `~/dotfiles/claude/...` holds the real files, and
/// `~/.claude` links into it with relative links (`../dotfiles/...`), next to links that stay
/// inside, an absolute link into the dotfiles, a dangling one, credentials (0600) and
/// `~/.claude.json`. Everything gets distinct mtimes.
pub fn build_stow_home(w: &World) {
    let c = w.claude();
    let dot = w.home.join("dotfiles/claude");
    write_file(&dot.join("CLAUDE.md"), b"# my rules\n", 0o644);
    write_file(&dot.join("commands/deploy.md"), b"deploy it\n", 0o644);
    write_file(&dot.join("agents/reviewer.md"), b"review it\n", 0o644);
    write_file(&dot.join("settings.local.json"), b"{\"x\":1}\n", 0o644);
    mkdir(&c, 0o700);
    mkdir(&c.join("agents"), 0o755);
    write_file(&c.join("settings.json"), b"{\"model\":\"opus\"}\n", 0o644);
    write_file(
        &c.join(".credentials.json"),
        b"{\"claudeAiOauth\":{}}\n",
        0o600,
    );
    write_file(
        &c.join("local/node_modules/@anthropic-ai/claude-code/cli.js"),
        b"#!/usr/bin/env node\n",
        0o755,
    );
    write_file(&c.join("todos/other.json"), b"[]\n", 0o644);
    for (p, t) in STOW_LINKS {
        ln_s(t, &c.join(p));
    }
    ln_s(dot.join("CLAUDE.md"), &c.join("absolute-rules.md"));
    write_file(&w.claude_json(), b"{\"numStartups\":3}\n", 0o600);
    let mut n = 0;
    stamp_tree(&w.home, &mut n);
}

/// `(st_dev, st_ino)` of what `path` resolves to (following links), if anything.
pub fn resolved(path: &Path) -> Option<(u64, u64)> {
    fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// What every link of `STOW_LINKS` and `absolute-rules.md` resolves to, under `root`.
pub fn stow_resolutions(root: &Path) -> Vec<(String, Option<(u64, u64)>)> {
    STOW_LINKS
        .iter()
        .map(|(p, _)| *p)
        .chain(["absolute-rules.md"])
        .map(|p| (p.to_string(), resolved(&root.join(p))))
        .collect()
}

/// What Docker leaves at `~/.claude.json` when compose bind-mounts a missing file: an empty
/// directory owned by root (mode 0755), with a distinct mtime.
pub fn docker_claude_json_dir(w: &World) {
    let p = w.claude_json();
    fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
    set_mode(&p, 0o755);
    std::os::unix::fs::lchown(&p, Some(0), Some(0)).unwrap();
    set_mtime(&p, 1_650_000_000, 123_456_789);
}

/// The journal's text (it names paths and link texts as JSON strings).
pub fn journal_text(w: &World) -> String {
    let p = w.home.join(".local/state/disinto/claude-init/journal.json");
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// `mkdir <dir>/.oauth_refresh.lock` aged `age_secs` (proper-lockfile's lock directory), with
/// Claude 2.1.332's owner record naming `pid` when given.
pub fn oauth_lock(dir: &Path, age_secs: i64, pid: Option<u32>) {
    let l = dir.join(".oauth_refresh.lock");
    fs::create_dir(&l).unwrap_or_else(|e| panic!("mkdir {}: {e}", l.display()));
    if let Some(pid) = pid {
        let owner = format!(
            "{{\"pid\":{pid},\"pidDomain\":\"host\",\"pidSpace\":\"x\",\"lockBirthtimeMs\":1}}"
        );
        write_file(
            &dir.join(".oauth_refresh.lock.owner"),
            owner.as_bytes(),
            0o600,
        );
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    set_mtime(&l, now - age_secs, 0);
}

/// `migrate --yes` in the world.
pub fn migrate(w: &World) -> Run {
    run(w.cmd().arg("--yes"))
}

/// `verify` in the world.
pub fn verify(w: &World) -> Run {
    run(&mut w.cmd_sub("verify"))
}

/// `undo --yes` in the world.
pub fn undo(w: &World) -> Run {
    run(w.cmd_sub("undo").arg("--yes"))
}

/// The run exited with `code`, else fail showing its output.
#[track_caller]
pub fn expect(r: &Run, code: i32, what: &str) {
    assert_eq!(
        r.code, code,
        "{what}: exit {}\nstdout:\n{}\nstderr:\n{}",
        r.code, r.stdout, r.stderr
    );
}
