//! Fault injection (issue 3): a failure or a crash at every point of a realistic migration,
//! seen as a user of the binary sees it. Each test compares a full manifest of the world.
//!
//! Needs the `failpoints` feature (`DCI_FAILPOINTS=name=error|kill`): `cargo test --all-features`.
#![cfg(feature = "failpoints")]

mod common;

use common::*;
use serde_json::Value;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The ids of the steps a real run would apply, in order, from `--dry-run --json`.
fn step_ids(w: &World) -> Vec<String> {
    let (code, doc) = run_json(w.cmd().args(["--dry-run", "--json"]));
    assert_eq!(code, 0, "dry run: {doc:#}");
    doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "planned" && s["id"] != "verify")
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// The journal's directory tree: `~/.local` did not exist before any run.
fn state_root(w: &World) -> std::path::PathBuf {
    w.home.join(".local")
}

/// Run without panicking on a signal: (status, stdout, stderr).
fn run_raw(cmd: &mut Command) -> (std::process::ExitStatus, String, String) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// After a crash: `status` says interrupted and where; then finish with `migrate` (check the
/// result) or reverse with `undo` (check the whole world is back).
fn recover(
    w: &World,
    finish: bool,
    world_before: &Manifest,
    claude_before: &Manifest,
    json_before: &[u8],
    what: &str,
) {
    if finish {
        let r = run(w.cmd().args(["--yes", "--json"]));
        assert_eq!(
            r.code, 0,
            "{what}: migrate after the crash:\n{}\n{}",
            r.stdout, r.stderr
        );
        assert_migrated(w, claude_before, json_before, what);
        // And undo after that brings back the original world.
        let r = run(w.cmd_sub("undo").args(["--yes", "--json"]));
        assert_eq!(
            r.code, 0,
            "{what}: undo after resume:\n{}\n{}",
            r.stdout, r.stderr
        );
        assert_same(
            world_before,
            &w.manifest(),
            &format!("{what}: resume then undo"),
        );
    } else {
        let r = run(w.cmd_sub("undo").args(["--yes", "--json"]));
        assert_eq!(
            r.code, 0,
            "{what}: undo after the crash:\n{}\n{}",
            r.stdout, r.stderr
        );
        assert_same(world_before, &w.manifest(), &format!("{what}: undo"));
        assert!(!exists(&state_root(w)), "{what}: state dir left behind");
    }
}

/// `status --json` after a crash that left a journal.
fn assert_interrupted(w: &World, what: &str) -> Value {
    let (code, doc) = run_json(w.cmd_sub("status").arg("--json"));
    assert_eq!(code, 0, "{what}: status: {doc:#}");
    assert_eq!(doc["layout"], "interrupted", "{what}: status: {doc:#}");
    assert!(
        doc["stopped_at"].is_string(),
        "{what}: status names the step: {doc:#}"
    );
    doc
}

// ---------------------------------------------------------------------------------------------
// An error at every failpoint: exit 1, everything rolled back, not one byte changed.
// ---------------------------------------------------------------------------------------------

fn error_at_every_failpoint(cross: bool) {
    let Some(probe) = world(cross) else { return };
    let ids = step_ids(&probe);
    drop(probe);
    assert!(ids.contains(&"move-config".to_string()), "{ids:?}");
    let mut points: Vec<(usize, String)> = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        points.push((i, format!("apply-{id}")));
        points.push((i, format!("applied-{id}")));
        if cross && id == "move-config" {
            points.push((i, "copied-move-config".into()));
            points.push((i, "placed-move-config".into()));
        }
    }
    let t0 = Instant::now();
    for (failing, fp) in &points {
        let w = world(cross).unwrap();
        let before = w.manifest();
        let (code, doc) = run_json(
            w.cmd()
                .args(["--yes", "--json"])
                .env("DCI_FAILPOINTS", format!("{fp}=error")),
        );
        let what = format!("{fp} (cross-device: {cross})");
        assert_eq!(code, 1, "{what}: {doc:#}");
        assert_eq!(doc["error"]["kind"], "apply-failed", "{what}: {doc:#}");
        let msg = doc["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(&ids[*failing]) && msg.contains("rolled back"),
            "{what}: {msg}"
        );
        assert_eq!(doc["changed"], false, "{what}: {doc:#}");
        let steps = doc["steps"].as_array().unwrap();
        for (j, id) in ids.iter().enumerate() {
            let s = steps
                .iter()
                .find(|s| s["id"] == id.as_str())
                .unwrap_or_else(|| panic!("{what}: no step {id}"));
            let want = match j.cmp(failing) {
                std::cmp::Ordering::Less => "rolled-back",
                std::cmp::Ordering::Equal => "failed",
                std::cmp::Ordering::Greater => "planned",
            };
            assert_eq!(s["status"], want, "{what}: step {id}: {doc:#}");
        }
        assert_same(&before, &w.manifest(), &what);
        assert!(
            !exists(&state_root(&w)),
            "{what}: ~/.local created and left behind"
        );
    }
    eprintln!(
        "{} error failpoints (cross-device: {cross}) in {:?}",
        points.len(),
        t0.elapsed()
    );
}

#[test]
fn error_at_every_failpoint_same_filesystem() {
    error_at_every_failpoint(false);
}

#[test]
fn error_at_every_failpoint_cross_device() {
    error_at_every_failpoint(true);
}

// ---------------------------------------------------------------------------------------------
// A rollback that itself fails: exit 6, the journal named; `undo` then restores everything.
// ---------------------------------------------------------------------------------------------

#[test]
fn failed_rollback_exits_6_and_undo_recovers() {
    for cross in [false, true] {
        let Some(w) = world(cross) else { continue };
        let before = w.manifest();
        let (code, doc) = run_json(w.cmd().args(["--yes", "--json"]).env(
            "DCI_FAILPOINTS",
            "apply-write-profile=error,undo-link-claude-dir=error",
        ));
        let what = format!("cross-device: {cross}");
        assert_eq!(code, 6, "{what}: {doc:#}");
        assert_eq!(doc["error"]["kind"], "rollback-failed", "{what}: {doc:#}");
        let msg = doc["error"]["message"].as_str().unwrap();
        let journal = w.home.join(".local/state/disinto/claude-init/journal.json");
        assert!(
            msg.contains(journal.to_str().unwrap()),
            "{what}: names the journal: {msg}"
        );
        assert!(journal.is_file(), "{what}: the journal is kept");
        let st = assert_interrupted(&w, &what);
        assert_eq!(st["stopped_at"], "link-claude-dir", "{what}: {st:#}");
        // A plain migrate refuses to guess; undo finishes the rollback.
        let mid = w.manifest();
        let (code, doc) = run_json(w.cmd().args(["--yes", "--json"]));
        assert_eq!(code, 3, "{what}: migrate after a failed rollback: {doc:#}");
        assert_eq!(doc["error"]["kind"], "undo-interrupted", "{what}: {doc:#}");
        assert_same(&mid, &w.manifest(), &format!("{what}: the refusal"));
        let r = run(w.cmd_sub("undo").args(["--yes", "--json"]));
        assert_eq!(r.code, 0, "{what}: undo:\n{}\n{}", r.stdout, r.stderr);
        assert_same(&before, &w.manifest(), &format!("{what}: after undo"));
    }
}

#[test]
fn kill_during_rollback_then_undo_finishes() {
    for cross in [false, true] {
        let Some(probe) = world(cross) else { continue };
        let ids = step_ids(&probe);
        drop(probe);
        // The last step fails; the rollback is killed while undoing each earlier step.
        let last = ids.last().unwrap().clone();
        for id in &ids[..ids.len() - 1] {
            let w = world(cross).unwrap();
            let before = w.manifest();
            let what =
                format!("{last} fails, rollback killed at undo-{id} (cross-device: {cross})");
            let (status, out, err) = run_raw(w.cmd().args(["--yes", "--json"]).env(
                "DCI_FAILPOINTS",
                format!("apply-{last}=error,undo-{id}=kill"),
            ));
            assert_eq!(status.signal(), Some(9), "{what}: {status:?}\n{out}\n{err}");
            let st = assert_interrupted(&w, &what);
            assert_eq!(st["stopped_at"], id.as_str(), "{what}: {st:#}");
            let r = run(w.cmd_sub("undo").args(["--yes", "--json"]));
            assert_eq!(r.code, 0, "{what}: {}\n{}", r.stdout, r.stderr);
            assert_same(&before, &w.manifest(), &what);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SIGKILL at every failpoint, then resume or undo.
// ---------------------------------------------------------------------------------------------

fn kill_at_every_failpoint(cross: bool) {
    let Some(probe) = world(cross) else { return };
    let ids = step_ids(&probe);
    drop(probe);
    let mut points: Vec<String> = Vec::new();
    for id in &ids {
        points.push(format!("apply-{id}"));
        if cross && id == "move-config" {
            points.push("copied-move-config".into());
            points.push("placed-move-config".into());
        }
        points.push(format!("applied-{id}"));
    }
    let t0 = Instant::now();
    for (i, fp) in points.iter().enumerate() {
        let w = world(cross).unwrap();
        let before = w.manifest();
        let claude_before = manifest(&w.claude());
        let json_before = std::fs::read(w.claude_json()).unwrap();
        let what = format!("kill at {fp} (cross-device: {cross})");
        let (status, out, err) = run_raw(
            w.cmd()
                .args(["--yes", "--json"])
                .env("DCI_FAILPOINTS", format!("{fp}=kill")),
        );
        assert_eq!(
            status.signal(),
            Some(9),
            "{what}: not killed: {status:?}\n{out}\n{err}"
        );
        let doc = assert_interrupted(&w, &what);
        let _ = doc;
        // Alternate, and the other way round on the other filesystem layout, so every point
        // is both resumed and undone across the two tests.
        let finish = (i + usize::from(cross)) % 2 == 0;
        recover(&w, finish, &before, &claude_before, &json_before, &what);
    }
    eprintln!(
        "{} kill failpoints (cross-device: {cross}) in {:?}",
        points.len(),
        t0.elapsed()
    );
}

#[test]
fn kill_at_every_failpoint_same_filesystem() {
    kill_at_every_failpoint(false);
}

#[test]
fn kill_at_every_failpoint_cross_device() {
    kill_at_every_failpoint(true);
}

// ---------------------------------------------------------------------------------------------
// SIGKILL while the first journal and its directories are being put in place.
// ---------------------------------------------------------------------------------------------

/// Kill at `journal-staged` (state dirs and journal built, not yet renamed into place): the
/// run changed nothing of the user's, so there is no journal; `then` recovers.
fn kill_before_first_journal(then_undo: bool) {
    let w = World::realistic();
    let before = w.manifest();
    let claude_before = manifest(&w.claude());
    let json_before = std::fs::read(w.claude_json()).unwrap();
    let (status, out, err) = run_raw(
        w.cmd()
            .args(["--yes", "--json"])
            .env("DCI_FAILPOINTS", "journal-staged=kill"),
    );
    assert_eq!(status.signal(), Some(9), "{status:?}\n{out}\n{err}");
    assert!(
        !exists(&w.home.join(".local/state/disinto/claude-init/journal.json")),
        "no journal in place yet"
    );
    let (code, st) = run_json(w.cmd_sub("status").arg("--json"));
    assert_eq!((code, &st["layout"]), (0, &Value::from("legacy")), "{st:#}");
    if then_undo {
        let (code, doc) = run_json(w.cmd_sub("undo").args(["--yes", "--json"]));
        assert_eq!(code, 0, "{doc:#}");
        assert_same(
            &before,
            &w.manifest(),
            "undo after a kill before the first journal",
        );
    } else {
        let r = run(w.cmd().args(["--yes", "--json"]));
        assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
        assert_migrated(&w, &claude_before, &json_before, "migrate after the kill");
        let r = run(w.cmd_sub("undo").args(["--yes", "--json"]));
        assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
        assert_same(&before, &w.manifest(), "migrate then undo after the kill");
    }
}

#[test]
fn kill_before_first_journal_then_migrate_and_undo() {
    kill_before_first_journal(false);
}

#[test]
fn kill_before_first_journal_then_undo() {
    kill_before_first_journal(true);
}

// ---------------------------------------------------------------------------------------------
// SIGKILL during undo, then undo again.
// ---------------------------------------------------------------------------------------------

#[test]
fn kill_during_undo_then_undo_finishes() {
    for cross in [false, true] {
        let Some(probe) = world(cross) else { continue };
        let ids = step_ids(&probe);
        drop(probe);
        for id in &ids {
            let w = world(cross).unwrap();
            let before = w.manifest();
            let r = run(w.cmd().args(["--yes", "--json"]));
            assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
            let what = format!("kill at undo-{id} (cross-device: {cross})");
            let (status, out, err) = run_raw(
                w.cmd_sub("undo")
                    .args(["--yes", "--json"])
                    .env("DCI_FAILPOINTS", format!("undo-{id}=kill")),
            );
            assert_eq!(status.signal(), Some(9), "{what}: {status:?}\n{out}\n{err}");
            assert_interrupted(&w, &what);
            // migrate refuses while an undo is half done.
            let (code, doc) = run_json(w.cmd().args(["--yes", "--json"]));
            assert_eq!(
                code, 3,
                "{what}: migrate during an interrupted undo: {doc:#}"
            );
            let r = run(w.cmd_sub("undo").args(["--yes", "--json"]));
            assert_eq!(r.code, 0, "{what}: {}\n{}", r.stdout, r.stderr);
            assert_same(&before, &w.manifest(), &what);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SIGKILL from outside at system calls spread over a cross-device migration of a few thousand files.
// ---------------------------------------------------------------------------------------------

const MANY: usize = 3000;

fn big_world() -> Option<World> {
    let w = world(true)?;
    build_many_files(&w.claude().join("projects/-home-user-src-big"), MANY);
    let mut n = 1_000_000;
    stamp_tree(&w.claude().join("projects/-home-user-src-big"), &mut n);
    // Re-stamp ~/.claude itself: adding the tree above changed its parents' mtimes.
    stamp_tree_shallow(&w.claude().join("projects"), &mut n);
    stamp_tree_shallow(&w.claude(), &mut n);
    Some(w)
}

/// Give one directory a distinct nanosecond mtime (not its contents).
fn stamp_tree_shallow(p: &Path, n: &mut i64) {
    *n += 1;
    set_mtime(p, 1_700_000_000 + *n, 123_456_789);
}

/// A cheap pseudo-random sequence (no dependency): xorshift from a fixed seed, so every run
/// picks the same kill points; `DCI_KILL_SEED=<n>` explores others (printed for a replay).
fn seed() -> u64 {
    std::env::var("DCI_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15)
        | 1
}

fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// The system calls that change something on disk: kill points. Not `openat`: the tool opens
/// `/proc/<pid>/fd` of every process (who holds a file open?), so how many it makes depends on
/// the machine, and "its n-th openat" would not name the same point from one run to the next.
const MUTATING: &[&str] = &[
    "creat",
    "write",
    "pwrite64",
    "writev",
    "fsync",
    "fdatasync",
    "syncfs",
    "ftruncate",
    "copy_file_range",
    "sendfile",
    "fchown",
    "fchownat",
    "lchown",
    "chown",
    "fchmod",
    "fchmodat",
    "chmod",
    "utimensat",
    "mkdir",
    "mkdirat",
    "rename",
    "renameat",
    "renameat2",
    "unlink",
    "unlinkat",
    "rmdir",
    "symlink",
    "symlinkat",
    "link",
    "linkat",
];

/// The main thread's system calls, in order, from a `strace -f` trace: `(name, n)` where this
/// is the main thread's n-th call of `name` (1-based, strace's `when=` counts per thread).
fn main_thread_calls(trace: &str) -> Vec<(String, u32)> {
    let mut main = None;
    let mut seen: std::collections::HashMap<String, u32> = Default::default();
    let mut out = Vec::new();
    for line in trace.lines() {
        // strace pads the pid to a fixed width: "8644  openat(...", "20924 openat(...".
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        let main = *main.get_or_insert(pid);
        if pid != main || rest.starts_with('<') || rest.starts_with("+++") {
            continue;
        }
        let Some((name, _)) = rest.split_once('(') else {
            continue;
        };
        let n = seen.entry(name.to_string()).or_default();
        *n += 1;
        out.push((name.to_string(), *n));
    }
    out
}

/// The last system call a trace shows (where a kill landed).
fn last_call(trace: &Path) -> String {
    let t = std::fs::read_to_string(trace).unwrap_or_default();
    t.lines()
        .rev()
        .find(|l| !l.contains("+++") && !l.contains("---"))
        .unwrap_or("(none)")
        .chars()
        .take(160)
        .collect()
}

/// SIGKILL at points chosen from what the tool does, not from a clock: one traced run lists
/// the main thread's system calls that change something; each trial then kills (strace
/// `inject=<call>:signal=SIGKILL:when=<n>`) at the n-th call of one of them, the trials
/// spread evenly over that list (copy, verify, removal, links, env file, rc file, journal).
/// strace counts per thread, so a worker thread reaching its own n-th call first kills there,
/// mid-copy or mid-removal: still a kill at a system call the tool makes. Every trial must die
/// by SIGKILL; then `migrate` (even trials) finishes the migration or `undo` (odd trials)
/// restores the world, full manifests compared.
#[test]
fn sigkill_at_system_calls_spread_over_a_big_cross_device_migration() {
    if !have_strace() {
        skip!("strace is not installed (apt-get install strace)");
    }
    let Some(w) = big_world() else { return };
    let claude_before = manifest(&w.claude());
    let json_before = std::fs::read(w.claude_json()).unwrap();
    // Traces live outside the world: its manifests must not see them.
    let traces = tempfile::tempdir().unwrap();
    let trace = traces.path().join("count.trace");
    let filter = ["-e", "signal=none", "-e", "trace=%file,%desc"].map(String::from);
    let (status, out, err) = run_raw(&mut straced(
        w.cmd().args(["--yes", "--json"]),
        &trace,
        &filter,
    ));
    assert!(
        status.success(),
        "traced unkilled run: {status:?}\n{out}\n{err}"
    );
    assert_migrated(&w, &claude_before, &json_before, "traced unkilled big run");
    let calls: Vec<(String, u32)> = main_thread_calls(&std::fs::read_to_string(&trace).unwrap())
        .into_iter()
        .filter(|(name, _)| MUTATING.contains(&name.as_str()))
        .collect();
    drop(w);
    eprintln!(
        "an unkilled migration of {MANY}+ files makes {} changing system calls in its main thread",
        calls.len()
    );
    assert!(
        calls.len() >= 40,
        "too few calls to spread kills over: {calls:?}"
    );

    let mut rng = seed();
    eprintln!("kill seed: {rng} (replay or explore with DCI_KILL_SEED=<n>)");
    const TRIALS: usize = 8;
    let mut interrupted = 0;
    for t in 0..TRIALS {
        let w = big_world().unwrap();
        let before = w.manifest();
        let claude_before = manifest(&w.claude());
        let json_before = std::fs::read(w.claude_json()).unwrap();
        // Trial t lands in the t-th slice of the list, at a pseudo-random call of it.
        let (lo, hi) = (
            calls.len() * t / TRIALS,
            (calls.len() * (t + 1) / TRIALS).max(calls.len() * t / TRIALS + 1),
        );
        let (name, n) = &calls[lo + (next(&mut rng) as usize) % (hi - lo)];
        let trace = traces.path().join(format!("kill-{t}.trace"));
        let filter = [
            "-e".to_string(),
            "signal=none".to_string(),
            "-e".to_string(),
            format!("trace={name}"),
            "-e".to_string(),
            format!("inject={name}:signal=SIGKILL:when={n}"),
        ];
        let (status, out, err) = run_raw(&mut straced(
            w.cmd().args(["--yes", "--json"]),
            &trace,
            &filter,
        ));
        let landed = last_call(&trace);
        let (_, st) = run_json(w.cmd_sub("status").arg("--json"));
        if st["layout"] == "interrupted" {
            interrupted += 1;
        }
        let finish = t % 2 == 0;
        let what = format!(
            "trial {t}: SIGKILL at call {n} of {name} (landed at `{landed}`; status layout {}, \
             stopped at {}), then {}",
            st["layout"],
            st["stopped_at"],
            if finish { "migrate" } else { "undo" }
        );
        eprintln!("{what}");
        assert_eq!(
            status.signal(),
            Some(9),
            "{what}: the run was not killed: {status:?}\n{out}\n{err}"
        );
        if finish {
            let r = run(w.cmd().args(["--yes", "--json"]));
            assert_eq!(r.code, 0, "{what}:\n{}\n{}", r.stdout, r.stderr);
            assert_migrated(&w, &claude_before, &json_before, &what);
        } else {
            let r = run(w.cmd_sub("undo").args(["--yes", "--json"]));
            assert_eq!(r.code, 0, "{what}:\n{}\n{}", r.stdout, r.stderr);
            assert_same(&before, &w.manifest(), &what);
        }
    }
    eprintln!("{TRIALS} kill trials, {interrupted} left an interrupted journal");
    assert!(
        interrupted >= TRIALS / 2,
        "only {interrupted} of {TRIALS} kills landed inside the journaled run: the kill points \
         tested little"
    );
}
