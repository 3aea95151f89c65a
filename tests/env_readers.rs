//! The env file and rc file edits read the same in every reader (issue 11 item 8).
//!
//! Readers, each in a CLEAN environment (only PATH), as the factory reads: bash (`set -a; source`),
//! dotenvy 0.15 (this test binary re-executed with a cleared environment: dotenvy fills `${VAR}`
//! from its process environment first), and python-dotenv (pinned, installed by this test into a
//! venv under `target/`). docker compose's parser (compose-go) is not run here: there is no Go
//! toolchain; its rules were read from its source and are what `envfile::quote_value` documents.
//!
//! The minimal cases of the issue are regression tests driving the real binary; a seeded
//! generator (`DCI_FUZZ_SEED`, `DCI_FUZZ_CASES`) covers random env and rc files through the
//! library, and a slice of them through the binary (first run, second run, undo).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use disinto_claude_init::{envfile, profile};
use nix::fcntl::{Flock, FlockArg};

const PYTHON_DOTENV: &str = "1.2.4";
const SHARED: &str = "CLAUDE_SHARED_DIR";
const CONFIG: &str = "CLAUDE_CONFIG_DIR";

type Values = BTreeMap<String, Option<Vec<u8>>>;

// ---------------------------------------------------------------------------------------------
// Readers
// ---------------------------------------------------------------------------------------------

/// What bash reads for each of `keys` after `set -a; source FILE`, in a clean environment
/// (None: unset).
fn bash_reads(file: &Path, keys: &BTreeSet<String>) -> Values {
    let mut script = String::from("set -a; source \"$1\" 2>/dev/null; ");
    for k in keys {
        script.push_str(&format!(
            "if [ -n \"${{{k}+x}}\" ]; then printf '%s\\0%s\\0' {k} \"${k}\"; fi; "
        ));
    }
    let out = Command::new("bash")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .arg("-c")
        .arg(script)
        .arg("bash")
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .expect("run bash");
    let mut map: Values = keys.iter().map(|k| (k.clone(), None)).collect();
    let mut parts = out.stdout.split(|&b| b == 0);
    while let (Some(k), Some(v)) = (parts.next(), parts.next()) {
        if k.is_empty() {
            break;
        }
        map.insert(String::from_utf8(k.to_vec()).unwrap(), Some(v.to_vec()));
    }
    map
}

/// Set in the child: read every file listed (one per line) in this file with dotenvy.
const DOTENVY_CHILD: &str = "DCI_DOTENVY_CHILD_LIST";

/// The child half of `dotenvy_reads`; as a plain test, it checks the reader on a known file.
#[test]
fn dotenvy_reader_child() {
    match std::env::var_os(DOTENVY_CHILD) {
        Some(list) => {
            for path in fs::read_to_string(list).unwrap().lines() {
                let mut m = serde_json::Map::new();
                let mut ok = true;
                // As `dotenvy::from_path` (the factory's call): a leading BOM is skipped.
                let bytes = fs::read(path).unwrap();
                let body = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(&bytes);
                for item in dotenvy::from_read_iter(body) {
                    match item {
                        Ok((k, v)) => {
                            m.insert(k, v.into());
                        }
                        Err(_) => ok = false,
                    }
                }
                let doc = if ok {
                    m.into()
                } else {
                    serde_json::Value::Null
                };
                println!("DCI-DOTENVY {doc}");
            }
        }
        None => {
            let t = tempfile::tempdir().unwrap();
            let f = t.path().join("e");
            fs::write(&f, "A=${PATH}x\nB=\"${A}y\"\n").unwrap();
            let got = dotenvy_reads(&[f]);
            let want: BTreeMap<String, String> = [("A", "x"), ("B", "xy")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .into();
            assert_eq!(got, vec![Some(want)]);
        }
    }
}

/// The list of `files` the dotenvy and python-dotenv readers take (one path a line), written in
/// a temp dir that lives as long as the returned guard.
fn file_list(files: &[PathBuf]) -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let list = t.path().join("list");
    let text: String = files.iter().map(|f| format!("{}\n", f.display())).collect();
    fs::write(&list, text).unwrap();
    (t, list)
}

/// Run a reference reader to the end; its stdout, after it succeeded (else fail, with its
/// stderr). The dotenvy and python-dotenv readers both run this way.
#[track_caller]
fn reader_stdout(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// dotenvy 0.15 on each file, in a clean environment; None where it reports an error.
fn dotenvy_reads(files: &[PathBuf]) -> Vec<Option<BTreeMap<String, String>>> {
    let (_t, list) = file_list(files);
    let out = reader_stdout(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "dotenvy_reader_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env_clear()
            .env(DOTENVY_CHILD, &list),
    );
    let docs: Vec<_> = out
        .lines()
        // libtest may print its "test ... " prefix on the same line.
        .filter_map(|l| l.split_once("DCI-DOTENVY ").map(|(_, j)| j))
        .map(|j| serde_json::from_str::<Option<BTreeMap<String, String>>>(j).unwrap())
        .collect();
    assert_eq!(docs.len(), files.len());
    docs
}

/// A venv under target/ with python-dotenv pinned; installed once (flock + marker).
fn python_dotenv() -> PathBuf {
    let root =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("venv-python-dotenv-{PYTHON_DOTENV}"));
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.with_extension("lock"))
        .unwrap();
    let _l = Flock::lock(lock, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap();
    let python = root.join("bin/python");
    let marker = root.join(".dci-installed");
    if marker.exists() {
        return python;
    }
    let _ = fs::remove_dir_all(&root);
    let ok = |c: &mut Command, what: &str| {
        let out = c
            .output()
            .unwrap_or_else(|e| panic!("{what}: {e} (install python3 and python3-venv)"));
        assert!(
            out.status.success(),
            "{what}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(
        Command::new("python3").args(["-m", "venv"]).arg(&root),
        "python3 -m venv",
    );
    ok(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg(format!("python-dotenv=={PYTHON_DOTENV}")),
        "pip install python-dotenv",
    );
    fs::write(&marker, PYTHON_DOTENV).unwrap();
    python
}

const PY_READER: &str = r#"
import json, sys, warnings, logging
logging.disable(logging.CRITICAL)
from dotenv import dotenv_values
for path in open(sys.argv[1]).read().splitlines():
    print(json.dumps(dotenv_values(path, interpolate=True)))
"#;

/// python-dotenv's `dotenv_values` on each file, in a clean environment (None values: keys
/// without a value).
fn python_reads(files: &[PathBuf]) -> Vec<BTreeMap<String, Option<String>>> {
    let python = python_dotenv();
    let (_t, list) = file_list(files);
    let out = reader_stdout(
        Command::new(python)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .arg("-c")
            .arg(PY_READER)
            .arg(&list),
    );
    let docs: Vec<_> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(docs.len(), files.len());
    docs
}

/// compose-go's dotenv parser, when `DCI_COMPOSE_DOTENV_READER` names a program that reads the
/// files named on its stdin and prints one JSON object (or `null`) per file. There is no Go
/// toolchain in CI and compose-go's source is not part of this repository, so this reader is
/// optional: without the variable it is not run, and the test says so on stderr.
fn compose_reads(files: &[PathBuf]) -> Option<Vec<Option<BTreeMap<String, String>>>> {
    let Some(reader) = std::env::var_os("DCI_COMPOSE_DOTENV_READER") else {
        eprintln!("compose-go reader not run (DCI_COMPOSE_DOTENV_READER unset)");
        return None;
    };
    let mut child = Command::new(reader)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let list: String = files.iter().map(|f| format!("{}\n", f.display())).collect();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), list.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let docs: Vec<_> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(docs.len(), files.len());
    Some(docs)
}

// ---------------------------------------------------------------------------------------------
// Checking one edit
// ---------------------------------------------------------------------------------------------

fn keys_of(bytes: &[u8]) -> BTreeSet<String> {
    let mut keys: BTreeSet<String> = [SHARED, CONFIG].map(String::from).into();
    for line in bytes.split(|&b| b == b'\n') {
        let line = line.trim_ascii_start();
        let line = line
            .strip_prefix(b"export ")
            .unwrap_or(line)
            .trim_ascii_start();
        let n = line
            .iter()
            .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
            .unwrap_or(line.len());
        if n > 0 && !line[0].is_ascii_digit() {
            keys.insert(String::from_utf8_lossy(&line[..n]).into_owned());
        }
    }
    keys
}

/// One file before and after the tool's edit, with the two wanted values.
struct Case {
    before: PathBuf,
    after: PathBuf,
    shared: String,
    config: String,
}

/// Every reader reads the two values exactly in `after`, and every other entry as in `before`.
fn check_cases(cases: &[Case]) {
    let files: Vec<PathBuf> = cases
        .iter()
        .flat_map(|c| [c.before.clone(), c.after.clone()])
        .collect();
    let dotenvy = dotenvy_reads(&files);
    let python = python_reads(&files);
    let compose = compose_reads(&files);
    let mut compose_checked = 0;
    for (i, c) in cases.iter().enumerate() {
        let before_bytes = fs::read(&c.before).unwrap();
        let after_bytes = fs::read(&c.after).unwrap();
        let show = || {
            format!(
                "\nbefore: {:?}\nafter:  {:?}",
                String::from_utf8_lossy(&before_bytes),
                String::from_utf8_lossy(&after_bytes)
            )
        };
        let mut keys = keys_of(&before_bytes);
        keys.extend(keys_of(&after_bytes));
        let wanted = [(SHARED, &c.shared), (CONFIG, &c.config)];

        let (b0, b1) = (bash_reads(&c.before, &keys), bash_reads(&c.after, &keys));
        for (k, v) in wanted {
            assert_eq!(b1[k].as_deref(), Some(v.as_bytes()), "bash {k}{}", show());
        }
        for k in keys.iter().filter(|k| *k != SHARED && *k != CONFIG) {
            assert_eq!(b0[k], b1[k], "bash, unrelated {k}{}", show());
        }

        let (d0, d1) = (&dotenvy[2 * i], &dotenvy[2 * i + 1]);
        let d0 = d0
            .as_ref()
            .unwrap_or_else(|| panic!("dotenvy rejects before{}", show()));
        let d1 = d1
            .as_ref()
            .unwrap_or_else(|| panic!("dotenvy rejects after{}", show()));
        for (k, v) in wanted {
            assert_eq!(d1.get(k), Some(v), "dotenvy {k}{}", show());
        }
        // The tool's own clean-environment reader (a port of dotenvy's parser) agrees with
        // dotenvy run in a clean environment, on both files.
        assert_eq!(
            &envfile::read_values(&before_bytes).unwrap(),
            d0,
            "port, before{}",
            show()
        );
        assert_eq!(
            &envfile::read_values(&after_bytes).unwrap(),
            d1,
            "port, after{}",
            show()
        );
        for k in keys.iter().filter(|k| *k != SHARED && *k != CONFIG) {
            assert_eq!(d0.get(k), d1.get(k), "dotenvy, unrelated {k}{}", show());
        }

        if let Some(compose) = &compose {
            if let Some(c0) = &compose[2 * i] {
                compose_checked += 1;
                let c1 = compose[2 * i + 1]
                    .as_ref()
                    .unwrap_or_else(|| panic!("compose rejects after{}", show()));
                for (k, v) in wanted {
                    assert_eq!(c1.get(k), Some(v), "compose {k}{}", show());
                }
                for k in keys.iter().filter(|k| *k != SHARED && *k != CONFIG) {
                    assert_eq!(c0.get(k), c1.get(k), "compose, unrelated {k}{}", show());
                }
            }
        }

        let (p0, p1) = (&python[2 * i], &python[2 * i + 1]);
        for (k, v) in wanted {
            assert_eq!(
                p1.get(k),
                Some(&Some(v.clone())),
                "python-dotenv {k}{}",
                show()
            );
        }
        for k in keys.iter().filter(|k| *k != SHARED && *k != CONFIG) {
            assert_eq!(
                p0.get(k),
                p1.get(k),
                "python-dotenv, unrelated {k}{}",
                show()
            );
        }
    }
    if compose.is_some() {
        eprintln!(
            "compose-go checked {compose_checked} of {} cases",
            cases.len()
        );
    }
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

// ---------------------------------------------------------------------------------------------
// Regression: the issue's minimal cases, through the real binary
// ---------------------------------------------------------------------------------------------

/// Migrate `w` with `env` as its env file (plus `extra_env` in the tool's environment, and the
/// world's paths as flags unless `no_shared_flag`), check every reader, a second run that changes
/// nothing, and an undo that gives the exact bytes back.
fn binary_round_trip(w: &World, env: &[u8], extra_env: &[(&str, &Path)], no_shared_flag: bool) {
    write_file(&w.env_file, env, 0o600);
    let mut cmd = w.cmd_bare();
    cmd.arg("migrate").arg("--yes");
    if no_shared_flag {
        cmd.arg("--home").arg(&w.home);
        cmd.arg("--env-file").arg(&w.env_file);
        cmd.arg("--profile").arg(&w.profile);
    } else {
        cmd.args(w.path_args());
    }
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let r = run(&mut cmd);
    assert_eq!(r.code, 0, "migrate\n{}\n{}", r.stdout, r.stderr);
    let after = fs::read(&w.env_file).unwrap();
    let t = tempfile::tempdir().unwrap();
    let before = t.path().join("before");
    fs::write(&before, env).unwrap();
    check_cases(&[Case {
        before,
        after: w.env_file.clone(),
        shared: w.shared.to_str().unwrap().to_owned(),
        config: w.config.to_str().unwrap().to_owned(),
    }]);

    let m = w.manifest();
    let mut cmd = w.cmd_sub("migrate");
    cmd.arg("--yes");
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let r = run(&mut cmd);
    assert_eq!(r.code, 0, "second run\n{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        fs::read(&w.env_file).unwrap(),
        after,
        "second run changed the env file"
    );
    let m2 = w.manifest();
    let envkey = |m: &Manifest| {
        m.iter()
            .find(|(k, _)| k.ends_with(b"factory/.env"))
            .map(|(_, n)| n.clone())
    };
    assert_eq!(envkey(&m), envkey(&m2), "second run touched the env file");

    let r = run(w.cmd_sub("undo").arg("--yes"));
    assert_eq!(r.code, 0, "undo\n{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        fs::read(&w.env_file).unwrap(),
        env,
        "undo did not restore the bytes"
    );
    assert_eq!(mode_of(&w.env_file), 0o600);
}

#[test]
fn crlf_comment_only_file() {
    let w = World::new();
    binary_round_trip(&w, b"# secrets\r\n", &[], false);
    let got = fs::read(&w.env_file).unwrap();
    // (after undo: the original) -- the LF form was checked by every reader above.
    assert_eq!(got, b"# secrets\r\n");
}

#[test]
fn crlf_file_without_final_newline_keeps_the_unrelated_entry() {
    let w = World::new();
    let env = b"_PRIV=bare # trailing comment\r\n  _PRIV=\"${TOKEN}-x\"";
    let keys: BTreeSet<String> = ["_PRIV".to_owned()].into();
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("e");
    fs::write(&f, env).unwrap();
    assert_eq!(bash_reads(&f, &keys)["_PRIV"].as_deref(), Some(&b"-x"[..]));
    binary_round_trip(&w, env, &[], false);
}

#[test]
fn reference_before_its_definition_is_read_as_a_clean_shell_does() {
    // The tool runs with CLAUDE_SHARED_DIR exported (no --shared-dir); the file refers to it
    // before defining it: a clean shell reads `/config` there, so the line must be rewritten.
    let w = World::new();
    let env = b"CLAUDE_CONFIG_DIR=${CLAUDE_SHARED_DIR}/config\nCLAUDE_SHARED_DIR=/elsewhere\n";
    binary_round_trip(&w, env, &[(SHARED, &w.shared)], true);
}

#[test]
fn shared_dir_with_a_single_quote_is_read_alike_by_every_reader() {
    let mut w = World::new();
    w.shared = w.root.join("var/lib/disinto/it's shared");
    w.config = w.shared.join("config");
    binary_round_trip(&w, b"A=1\n", &[], false);
}

#[test]
fn shared_dir_no_quoting_serves_is_refused_with_exit_2() {
    for name in ["it's $x", "back\\slash", "it's \"q\""] {
        let mut w = World::new();
        w.shared = w.root.join("var/lib/disinto").join(name);
        w.config = w.shared.join("config");
        write_file(&w.env_file, b"A=1\n", 0o600);
        mkdir(&w.claude(), 0o755);
        let m = w.manifest();
        let r = run(w.cmd_sub("migrate").arg("--yes"));
        assert_eq!(r.code, 2, "{name:?}\n{}\n{}", r.stdout, r.stderr);
        assert!(
            r.stderr.contains("docker compose") && r.stderr.contains("--no-env-file"),
            "{}",
            r.stderr
        );
        assert_same(&m, &w.manifest(), name);
        // Without the env file there is nothing to quote: such a path is the operator's choice.
        let r = run(w
            .cmd_bare()
            .args(["migrate", "--yes", "--no-env-file", "--home"])
            .arg(&w.home)
            .arg("--shared-dir")
            .arg(&w.shared)
            .arg("--profile")
            .arg(&w.profile));
        assert_eq!(
            r.code, 0,
            "{name:?} --no-env-file\n{}\n{}",
            r.stdout, r.stderr
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Generator
// ---------------------------------------------------------------------------------------------

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

fn seed() -> u64 {
    std::env::var("DCI_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0011)
}

fn cases_wanted(default: usize) -> usize {
    std::env::var("DCI_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Shared-dir paths the tool can write (each quoting form), and some it must refuse.
const PATHS: &[&str] = &[
    "/var/lib/disinto/claude-shared",
    "/t/s",
    "/srv/with space",
    "/srv/it's",
    "/srv/a#b",
    "/srv/$x y",
    "/srv/q\"d",
    "/srv/ünï ☃",
];
const BAD_PATHS: &[&str] = &["/srv/it's $x", "/srv/b\\s"];

/// A random env file: comments, blanks, entries in bash's and dotenvy's common dialect (bare,
/// single-, double-quoted, `${REF}`, `export`, trailing comments, leading blanks), stale or
/// referencing CLAUDE_* entries, LF or CRLF per line, sometimes no final line ending or a BOM.
/// Unrelated entries never refer to the two CLAUDE_* keys (rewriting those changes them).
fn gen_env(r: &mut Rng) -> Vec<u8> {
    let keys = ["_G0", "_G1", "_G2", "TOKEN", "_PRIV"];
    let vals = ["bare", "/p/q", "a-b.c", "x@y:1", ""];
    let mut out = String::new();
    if r.below(20) == 0 {
        out.push('\u{feff}');
    }
    let n = r.below(8);
    for _ in 0..n {
        let k = *r.pick(&keys);
        let v = *r.pick(&vals);
        let line = match r.below(12) {
            0 => "# secrets and such".to_owned(),
            1 => String::new(),
            2 => format!("{k}={v}"),
            3 => format!("{k}='{v} with $pace'"),
            4 => format!("{k}=\"${{{}}}-x\"", r.pick(&keys)),
            5 => format!("export {k}={v}"),
            6 => format!("{k}=bare # trailing comment"),
            7 => format!("  {k}=\"{v} #not-a-comment\""),
            8 => format!(
                "{SHARED}={}",
                r.pick(&["/old", "/t/s", "'/srv/with space'"])
            ),
            9 => format!("{CONFIG}=${{{SHARED}}}/config"),
            10 => format!("export {CONFIG}=/home/user/.claude # old"),
            _ => format!("{CONFIG}=\"${{{SHARED}}}/config\""),
        };
        out.push_str(&line);
        out.push_str(if r.below(3) == 0 { "\r\n" } else { "\n" });
    }
    if r.below(4) == 0 {
        // No final line ending.
        while out.ends_with(['\n', '\r']) {
            out.pop();
        }
    }
    out.into_bytes()
}

#[test]
fn generated_env_files_every_reader_idempotent() {
    let mut r = Rng(seed());
    let n = cases_wanted(300);
    let t = tempfile::tempdir().unwrap();
    let mut cases = Vec::new();
    let mut refused = 0;
    for i in 0..n {
        let env = gen_env(&mut r);
        let bad = r.below(10) == 0;
        let shared = if bad {
            *r.pick(BAD_PATHS)
        } else {
            *r.pick(PATHS)
        };
        let config = format!("{shared}/config");
        let entries = [(SHARED, os(shared)), (CONFIG, os(&config))];
        let result = envfile::edit(&env, &entries);
        if bad {
            assert!(
                matches!(result, Err(envfile::EnvFileError::Unquotable { .. })),
                "seed {} case {i}: {result:?}",
                seed()
            );
            refused += 1;
            continue;
        }
        let new = result
            .unwrap_or_else(|e| panic!("case {i}: {e}: {:?}", String::from_utf8_lossy(&env)))
            .unwrap_or_else(|| env.clone());
        assert_eq!(
            envfile::edit(&new, &entries).unwrap(),
            None,
            "case {i}: second run changes {:?}",
            String::from_utf8_lossy(&new)
        );
        let before = t.path().join(format!("{i}.before"));
        let after = t.path().join(format!("{i}.after"));
        fs::write(&before, &env).unwrap();
        fs::write(&after, &new).unwrap();
        cases.push(Case {
            before,
            after,
            shared: shared.to_owned(),
            config,
        });
    }
    eprintln!(
        "seed {}: {} files checked by bash, dotenvy and python-dotenv, {refused} refused",
        seed(),
        cases.len()
    );
    assert!(cases.len() > n / 2 && refused > 0);
    check_cases(&cases);
}

#[test]
fn generated_env_files_through_the_binary_with_undo() {
    let mut r = Rng(seed() ^ 0xb1);
    for _ in 0..cases_wanted(300) / 20 {
        let env = gen_env(&mut r);
        let mut w = World::new();
        let name = *r.pick(&["claude-shared", "with space", "it's", "a#b"]);
        w.shared = w.root.join("var/lib/disinto").join(name);
        w.config = w.shared.join("config");
        binary_round_trip(&w, &env, &[], false);
    }
}

/// A random rc file: shell lines that set unrelated variables, comments, `CLAUDE_CONFIG_DIR`
/// before where the block goes, old complete blocks, orphan markers, no final newline.
fn gen_rc(r: &mut Rng) -> Vec<u8> {
    let old = profile::render_block(profile::ShellKind::Bash, Path::new("/old/config"));
    let mut out: Vec<u8> = Vec::new();
    for _ in 0..r.below(8) {
        match r.below(9) {
            0 => out.extend_from_slice(b"# ~/.bashrc\n"),
            1 => out.extend_from_slice(b"\n"),
            2 => out.extend_from_slice(b"export _R1='x y'\n"),
            3 => out.extend_from_slice(b"alias ll='ls -l'\n"),
            4 => out.extend_from_slice(b"if true; then _R2=1; fi\n"),
            5 => out.extend_from_slice(b"export CLAUDE_CONFIG_DIR=$HOME/.claude\n"),
            6 => out.extend_from_slice(&old),
            7 => out.extend_from_slice(format!("{}\n", profile::START_MARKER).as_bytes()),
            _ => out.extend_from_slice(b"_R3=\"$_R1-z\"\n"),
        }
    }
    if r.below(4) == 0 && out.ends_with(b"\n") {
        out.pop();
    }
    out
}

#[test]
fn generated_rc_files_bash_reads_the_block_unless_an_override_is_named() {
    let mut r = Rng(seed() ^ 0x7c);
    let t = tempfile::tempdir().unwrap();
    let keys: BTreeSet<String> = ["_R1", "_R2", "_R3", CONFIG].map(String::from).into();
    let mut overridden = 0;
    let n = cases_wanted(300);
    for i in 0..n {
        let rc = gen_rc(&mut r);
        let config = *r.pick(&["/s/config", "/srv/it's/config", "/srv/$x y/config"]);
        let block = profile::render_block(profile::ShellKind::Bash, Path::new(config));
        let new = profile::apply_block(&rc, &block).unwrap_or_else(|| rc.clone());
        assert_eq!(
            profile::apply_block(&new, &block),
            None,
            "case {i}: not idempotent"
        );
        let (fb, fa) = (
            t.path().join(format!("{i}.rc0")),
            t.path().join(format!("{i}.rc1")),
        );
        fs::write(&fb, &rc).unwrap();
        fs::write(&fa, &new).unwrap();
        let (b0, b1) = (bash_reads(&fb, &keys), bash_reads(&fa, &keys));
        for k in ["_R1", "_R2", "_R3"] {
            assert_eq!(
                b0[k],
                b1[k],
                "case {i}: {k} {:?}",
                String::from_utf8_lossy(&new)
            );
        }
        let overrides = profile::later_overrides(&new);
        if overrides.is_empty() {
            assert_eq!(
                b1[CONFIG].as_deref(),
                Some(config.as_bytes()),
                "case {i}: {:?}",
                String::from_utf8_lossy(&new)
            );
        } else {
            overridden += 1;
            // A named line really overrides: bash does not end up with the block's value.
            assert_ne!(
                b1[CONFIG].as_deref(),
                Some(config.as_bytes()),
                "case {i}: named {overrides:?} but bash reads the block's value"
            );
        }
    }
    eprintln!("{n} rc files, {overridden} with a later override named");
    assert!(overridden > 0 && overridden < n);
}

#[test]
fn rc_round_trip_through_the_binary_restores_bytes() {
    let mut r = Rng(seed() ^ 0x3d);
    for _ in 0..cases_wanted(300) / 30 {
        let rc = gen_rc(&mut r);
        let w = World::new();
        write_file(&w.profile, &rc, 0o644);
        let r1 = run(w.cmd_sub("migrate").arg("--yes"));
        let after = fs::read(&w.profile).unwrap();
        // A later line overriding the block is the user's to fix: verify says so, exit 5.
        let code = if profile::later_overrides(&after).is_empty() {
            0
        } else {
            5
        };
        assert_eq!(r1.code, code, "{}\n{}", r1.stdout, r1.stderr);
        let r2 = run(w.cmd_sub("migrate").arg("--yes"));
        assert_eq!(r2.code, code, "{}\n{}", r2.stdout, r2.stderr);
        assert_eq!(
            fs::read(&w.profile).unwrap(),
            after,
            "second run changed the rc file"
        );
        let u = run(w.cmd_sub("undo").arg("--yes"));
        assert_eq!(u.code, 0, "{}\n{}", u.stdout, u.stderr);
        assert_eq!(
            fs::read(&w.profile).unwrap(),
            rc,
            "undo did not restore the rc bytes"
        );
    }
}
