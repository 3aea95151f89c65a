//! Generate a realistic `~/.claude` of N files for benchmarks and tests.
//!
//! ```text
//! cargo run --release --example gen_home -- [--files N] [--bytes B] [--seed S] DIR
//! ```
//!
//! `DIR` (the `.claude` directory itself) must not exist; it is created mode 0700. The tree has
//! Claude Code's shape and size mix (docs/contract.md, "Claude Code's files"): `.credentials.json` (0600), `settings*.json`,
//! `CLAUDE.md`, a `history.jsonl`, `statsig/`, `plugins/`, an empty `ide/`, a `local/` Node
//! install with a relative symlink in `node_modules/.bin`, and then the bulk: about 85% of the
//! files are `projects/<encoded-cwd>/<uuid>.jsonl` transcripts (most of a few KB, some tens of
//! KB, a few hundred KB and a handful of several MB), 10% `todos/*.json` (mostly `[]`), 5%
//! `shell-snapshots/*.sh`.
//!
//! Exactly `N` regular files are written (`--files`, default 1000), holding `B` bytes in total
//! (`--bytes`, default 10,000 per file: 20,000 files make 200 MB), within a few bytes per
//! file of rounding. Names, sizes and contents are a pure function of `(N, B, seed)`; times are
//! whatever the clock says. Prints one line: `files dirs symlinks bytes`.
//!
//! Benches include this file as a module (`#[path = "../examples/gen_home.rs"] mod gen_home;`)
//! and call [`generate`]; it depends on std only.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Regular files in the tree.
    pub files: usize,
    /// Total bytes of those files (approximately; never below what the fixed files need).
    pub bytes: u64,
    pub seed: u64,
}

impl Spec {
    /// `files` files averaging 10,000 bytes (the issue's 20,000 files / 200 MB mix).
    pub fn new(files: usize, seed: u64) -> Spec {
        Spec {
            files,
            bytes: files as u64 * 10_000,
            seed,
        }
    }
}

/// What was generated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Generated {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
}

/// xorshift64*: small, fast and deterministic; quality is irrelevant here.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Log-uniform in [lo, hi).
    fn log_uniform(&mut self, lo: f64, hi: f64) -> f64 {
        (lo.ln() + self.unit() * (hi.ln() - lo.ln())).exp()
    }
    fn uuid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | (b >> 48) & 0x3fff,
            b & 0xffff_ffff_ffff
        )
    }
}

/// jsonl-looking text to slice file contents from.
fn text_pool(rng: &mut Rng, len: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "the",
        "test",
        "fails",
        "because",
        "cargo",
        "build",
        "function",
        "returns",
        "error",
        "path",
        "file",
        "rename",
        "config",
        "shared",
        "token",
        "refresh",
        "lock",
        "directory",
        "symlink",
        "journal",
        "verify",
        "copy",
        "bytes",
        "manifest",
        "Read",
        "Edit",
        "Bash",
        "tool_use",
        "tool_result",
        "\\u00e9t\\u00e9",
        "\\u4e2d\\u6587",
        "ok",
        "diff",
        "commit",
    ];
    let mut v = Vec::with_capacity(len + 1024);
    let mut i = 0u64;
    while v.len() < len {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        let mut msg = String::new();
        for _ in 0..(8 + rng.below(60)) {
            msg.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
            msg.push(' ');
        }
        let line = format!(
            "{{\"parentUuid\":\"{}\",\"type\":\"{role}\",\"uuid\":\"{}\",\"timestamp\":\"2025-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z\",\"message\":{{\"role\":\"{role}\",\"content\":\"{msg}\"}}}}\n",
            rng.uuid(),
            rng.uuid(),
            1 + rng.below(12),
            1 + rng.below(28),
            rng.below(24),
            rng.below(60),
            rng.below(60),
            rng.below(1000),
        );
        v.extend_from_slice(line.as_bytes());
        i += 1;
    }
    v
}

/// One file to write: where, how big, with which mode.
struct Plan {
    rel: PathBuf,
    size: u64,
    mode: u32,
    /// Fixed content (small config files), else a slice of the pool.
    fixed: Option<&'static [u8]>,
}

const CREDENTIALS: &[u8] = br#"{"claudeAiOauth":{"accessToken":"sk-ant-oat01-FAKE-bench-access-token","refreshToken":"sk-ant-ort01-FAKE-bench-refresh-token","expiresAt":1767225600000,"scopes":["user:inference","user:profile"],"subscriptionType":"max"}}"#;
const SETTINGS: &[u8] =
    b"{\n  \"model\": \"opus\",\n  \"permissions\": {\"allow\": [\"Bash(cargo test:*)\"]}\n}\n";
const SETTINGS_LOCAL: &[u8] = b"{\"permissions\":{\"allow\":[\"Bash(git status)\"],\"deny\":[]}}\n";
const CLAUDE_MD: &[u8] = b"# Global instructions\n\nPrefer small commits. Run the tests.\n";
const STATSIG: &[u8] = b"\"5c2f0b8e-8a1d-4d6e-9c3b-7f1e2d3c4b5a\"";
const PLUGINS: &[u8] = b"{\"repositories\":{}}\n";
const PACKAGE: &[u8] =
    b"{\"name\":\"claude-local\",\"dependencies\":{\"@anthropic-ai/claude-code\":\"^1.0.0\"}}\n";
const LAUNCHER: &[u8] =
    b"#!/bin/bash\nexec \"$HOME/.claude/local/node_modules/.bin/claude\" \"$@\"\n";
const CLI_JS: &[u8] = b"#!/usr/bin/env node\nconsole.log('fake claude');\n";
const CLI_PACKAGE: &[u8] =
    b"{\"name\":\"@anthropic-ai/claude-code\",\"version\":\"1.0.0\",\"bin\":{\"claude\":\"cli.js\"}}\n";

fn fixed_files() -> Vec<Plan> {
    let f = |rel: &str, c: &'static [u8], mode: u32| Plan {
        rel: rel.into(),
        size: c.len() as u64,
        mode,
        fixed: Some(c),
    };
    vec![
        f(".credentials.json", CREDENTIALS, 0o600),
        f("settings.json", SETTINGS, 0o644),
        f("settings.local.json", SETTINGS_LOCAL, 0o644),
        f("CLAUDE.md", CLAUDE_MD, 0o644),
        f("statsig/statsig.stable_id.2656274335", STATSIG, 0o644),
        f("plugins/config.json", PLUGINS, 0o644),
        f("local/package.json", PACKAGE, 0o644),
        f("local/claude", LAUNCHER, 0o755),
        f(
            "local/node_modules/@anthropic-ai/claude-code/cli.js",
            CLI_JS,
            0o755,
        ),
        f(
            "local/node_modules/@anthropic-ai/claude-code/package.json",
            CLI_PACKAGE,
            0o644,
        ),
    ]
}

/// Every file of the tree, sizes final. Pure function of the spec.
fn plan(spec: &Spec, rng: &mut Rng) -> Vec<Plan> {
    let mut out = fixed_files();
    out.truncate(spec.files);
    let rest = spec.files - out.len();
    if rest == 0 {
        return out;
    }
    // history.jsonl counts as a transcript for sizing (it grows with use like one).
    let todos = rest / 10;
    let snaps = rest / 20;
    let transcripts = rest - todos - snaps; // >= 1, history.jsonl among them
    let mut others = Vec::new();
    for _ in 0..todos {
        let id = rng.uuid();
        let size = if rng.below(10) < 6 {
            2
        } else {
            100 + rng.below(1900)
        };
        others.push(Plan {
            rel: format!("todos/{id}-agent-{id}.json").into(),
            size,
            mode: 0o644,
            fixed: None,
        });
    }
    for i in 0..snaps {
        others.push(Plan {
            rel: format!(
                "shell-snapshots/snapshot-bash-{}-{i:06x}.sh",
                1_735_689_600_000u64 + i as u64 * 7919
            )
            .into(),
            size: 2000 + rng.below(6000),
            mode: 0o644,
            fixed: None,
        });
    }
    // Transcripts: many small, some medium, a few large (raw sizes, scaled below).
    let mut raw: Vec<f64> = (0..transcripts)
        .map(|_| {
            let r = rng.below(1000);
            if r < 750 {
                rng.log_uniform(300.0, 6_000.0)
            } else if r < 970 {
                rng.log_uniform(6_000.0, 48_000.0)
            } else if r < 997 {
                rng.log_uniform(48_000.0, 512_000.0)
            } else {
                rng.log_uniform(1_000_000.0, 8_000_000.0)
            }
        })
        .collect();
    let fixed_bytes: u64 =
        out.iter().map(|p| p.size).sum::<u64>() + others.iter().map(|p| p.size).sum::<u64>();
    let want = spec
        .bytes
        .saturating_sub(fixed_bytes)
        .max(transcripts as u64);
    let scale = want as f64 / raw.iter().sum::<f64>();
    for r in raw.iter_mut() {
        *r = (*r * scale).max(1.0);
    }
    let ndirs = (transcripts / 60).max(1);
    let dirs: Vec<String> = (0..ndirs)
        .map(|d| {
            let kind = ["src", "work", "tmp", "go/src/github.com/acme", "projects"];
            format!(
                "-home-user-{}-repo{d}",
                kind[d % kind.len()].replace('/', "-")
            )
        })
        .collect();
    for (i, size) in raw.into_iter().enumerate() {
        let rel: PathBuf = if i == 0 {
            "history.jsonl".into()
        } else {
            // Skewed: a few projects hold most sessions.
            let u = rng.unit();
            let d = ((u * u) * ndirs as f64) as usize;
            format!("projects/{}/{}.jsonl", dirs[d.min(ndirs - 1)], rng.uuid()).into()
        };
        out.push(Plan {
            rel,
            size: size.round() as u64,
            mode: if i == 0 { 0o600 } else { 0o644 },
            fixed: None,
        });
    }
    out.extend(others);
    out
}

fn mkdir_p(
    path: &Path,
    made: &mut std::collections::HashSet<PathBuf>,
    n: &mut u64,
) -> io::Result<()> {
    if made.contains(path) || path.as_os_str().is_empty() {
        return Ok(());
    }
    if let Some(p) = path.parent() {
        mkdir_p(p, made, n)?;
    }
    match fs::DirBuilder::new().mode(0o755).create(path) {
        Ok(()) => *n += 1,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    made.insert(path.to_path_buf());
    Ok(())
}

/// Generate the tree described by `spec` at `root` (which must not exist).
pub fn generate(root: &Path, spec: &Spec) -> io::Result<Generated> {
    let mut rng = Rng::new(spec.seed);
    let pool = text_pool(&mut rng, 1 << 20);
    let files = plan(spec, &mut rng);
    fs::DirBuilder::new().mode(0o700).create(root)?;
    let mut g = Generated::default();
    let mut made = std::collections::HashSet::new();
    made.insert(root.to_path_buf());
    for sub in [
        "ide",
        "projects",
        "todos",
        "shell-snapshots",
        "statsig",
        "local/node_modules/.bin",
    ] {
        mkdir_p(&root.join(sub), &mut made, &mut g.dirs)?;
    }
    std::os::unix::fs::symlink(
        "../@anthropic-ai/claude-code/cli.js",
        root.join("local/node_modules/.bin/claude"),
    )?;
    g.symlinks += 1;
    for p in &files {
        let path = root.join(&p.rel);
        if let Some(parent) = path.parent() {
            mkdir_p(parent, &mut made, &mut g.dirs)?;
        }
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(p.mode)
            .open(&path)?;
        match p.fixed {
            Some(c) => f.write_all(c)?,
            None => write_slice(&mut f, &pool, rng.below(pool.len() as u64) as usize, p.size)?,
        }
        g.files += 1;
        g.bytes += p.size;
    }
    Ok(g)
}

/// `size` bytes of the pool from `start`, wrapping around.
fn write_slice(f: &mut File, pool: &[u8], mut start: usize, size: u64) -> io::Result<()> {
    let mut left = size as usize;
    while left > 0 {
        let n = left.min(pool.len() - start);
        f.write_all(&pool[start..start + n])?;
        left -= n;
        start = 0;
    }
    Ok(())
}

#[allow(dead_code)]
fn main() {
    let mut spec = Spec::new(1000, 1);
    let mut bytes = None;
    let mut dir = None;
    let mut args = std::env::args_os().skip(1);
    let usage = "usage: gen_home [--files N] [--bytes B] [--seed S] DIR";
    while let Some(a) = args.next() {
        let mut num = |what: &str| -> u64 {
            args.next()
                .and_then(|v| v.to_str().and_then(|s| s.replace('_', "").parse().ok()))
                .unwrap_or_else(|| {
                    eprintln!("{what} needs a number\n{usage}");
                    std::process::exit(2)
                })
        };
        match a.to_str() {
            Some("--files") => spec.files = num("--files") as usize,
            Some("--bytes") => bytes = Some(num("--bytes")),
            Some("--seed") => spec.seed = num("--seed"),
            Some("-h" | "--help") => {
                println!("{usage}");
                return;
            }
            Some(s) if s.starts_with('-') => {
                eprintln!("unknown option {s}\n{usage}");
                std::process::exit(2)
            }
            _ => dir = Some(PathBuf::from(a)),
        }
    }
    spec.bytes = bytes.unwrap_or(spec.files as u64 * 10_000);
    let Some(dir) = dir else {
        eprintln!("{usage}");
        std::process::exit(2)
    };
    match generate(&dir, &spec) {
        Ok(g) => println!("{} {} {} {}", g.files, g.dirs, g.symlinks, g.bytes),
        Err(e) => {
            eprintln!("gen_home: {}: {e}", dir.display());
            std::process::exit(1)
        }
    }
}
