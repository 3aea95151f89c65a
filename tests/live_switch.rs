//! Issue 13's ENOENT window: on one filesystem `~/.claude` (a directory) becomes the config dir
//! and, in the same instant, a link to it (`renameat2(RENAME_EXCHANGE)` with a link made first at
//! the config dir's name), so an agent that opens `~/.claude/...` at any instant finds it.
//!
//! Proven with the real binary paused at failpoints around the switch (`DCI_FAILPOINT_DIR`): at
//! each pause the path resolves, and a real reader process (bash) that checks the path in a loop
//! during the whole run, and is seen to go round at every pause, never finds it missing. Killed at
//! the new points, the run is finished or undone exactly.

mod common;

use common::attacker::spawn_paused;
use common::*;
use std::fs;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A real process checking, in a loop, that `path` exists: one line `missing` in its log each
/// time it does not; the loop count in `<dir>/rounds` every 50 rounds (so the test can see it go
/// round). Stops when `<dir>/stop` exists.
struct Reader {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Reader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Reader {
    fn start(path: &Path) -> Reader {
        let dir = tempfile::tempdir().unwrap();
        let script = r#"
            f=$1 d=$2 n=0
            while [ ! -e "$d/stop" ]; do
                if [ ! -e "$f" ]; then echo missing >>"$d/log"; fi
                n=$((n + 1))
                if [ $((n % 50)) = 0 ]; then echo "$n" >"$d/rounds.tmp"; mv "$d/rounds.tmp" "$d/rounds"; fi
            done
            echo "$n" >"$d/rounds.tmp"; mv "$d/rounds.tmp" "$d/rounds"
        "#;
        let child = Command::new("bash")
            .args(["-c", script, "reader"])
            .arg(path)
            .arg(dir.path())
            .stdin(Stdio::null())
            .spawn()
            .expect("bash");
        let r = Reader { child, dir };
        r.wait_rounds(0);
        r
    }

    fn rounds(&self) -> u64 {
        fs::read_to_string(self.dir.path().join("rounds"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Wait until the reader has gone round 100 more times than `after` (an event, not a time).
    fn wait_rounds(&self, after: u64) -> u64 {
        wait_for("the reader to go round", || {
            let n = self.rounds();
            (n >= after + 100).then_some(n)
        })
    }

    fn missing(&self) -> usize {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(self.dir.path().join("log")) {
            f.read_to_string(&mut s).unwrap();
        }
        s.lines().count()
    }

    fn stop(mut self) -> (u64, usize) {
        fs::write(self.dir.path().join("stop"), b"").unwrap();
        let st = self.child.wait().unwrap();
        assert!(st.success(), "reader: {st:?}");
        (self.rounds(), self.missing())
    }
}

/// Poll `f` until it gives a value; panics after a minute (a hang, not a timing assumption).
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

fn config(w: &World) -> PathBuf {
    w.shared.join("config")
}

/// Run `cmd` paused at each of `points` in turn while a reader checks `probe` in a loop: at each
/// pause `probe` holds what it held before the run, `at(point)` holds, and the reader has gone round 100 more times
/// without finding it missing; at the end the run exited 0, every point was reached, and the
/// reader, stopped, never found it missing.
fn never_missing(cmd: &mut Command, points: &[&str], probe: &Path, mut at: impl FnMut(&str)) {
    let want = fs::read(probe).expect("the probe file");
    let reader = Reader::start(probe);
    let mut p = spawn_paused(cmd, points);
    let mut rounds = 0;
    let mut seen = Vec::new();
    for &pt in points {
        if !p.reached(pt) {
            break;
        }
        seen.push(pt);
        assert_eq!(
            fs::read(probe).unwrap_or_else(|e| panic!("at {pt}: {}: {e}", probe.display())),
            want,
            "at {pt}"
        );
        at(pt);
        rounds = reader.wait_rounds(rounds);
        assert_eq!(reader.missing(), 0, "the reader found it missing by {pt}");
        p.release(pt);
    }
    let r = p.finish(points);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(seen, points, "every pause point was reached");
    let (n, missing) = reader.stop();
    assert!(n > 500, "the reader went round {n} times");
    assert_eq!(missing, 0, "the reader found {} missing", probe.display());
}

/// Pause at each point around the switch; at each, `~/.claude/settings.json` resolves and the
/// reader goes round without finding it missing.
#[test]
fn claude_dir_never_stops_resolving_during_the_switch() {
    let w = World::realistic();
    let claude_before = manifest(&w.claude());
    let json_before = fs::read(w.claude_json()).unwrap();
    // Before the move, right after it (where the old rename-then-link left `~/.claude` missing
    // until the link step), before and after the link step.
    let points = [
        "apply-move-config",
        "applied-move-config",
        "apply-link-claude-dir",
        "applied-link-claude-dir",
    ];
    let probe = w.claude().join("settings.json");
    never_missing(w.cmd().args(["--yes", "--json"]), &points, &probe, |pt| {
        if pt == "applied-move-config" {
            // One instant later, both names swapped: ~/.claude is the link to the moved dir.
            assert_eq!(fs::read_link(w.claude()).unwrap(), config(&w), "at {pt}");
            assert!(
                fs::symlink_metadata(config(&w)).unwrap().is_dir(),
                "at {pt}"
            );
        }
    });
    assert_migrated(&w, &claude_before, &json_before, "switch");
}

/// `undo` of a migration on one filesystem: `~/.claude` goes from the link back to the
/// directory in one instant too. The link step found the link in place (the exchange made it), so
/// its undo leaves it, and `move-config`'s undo exchanges the names back. (Before, the link step's
/// undo removed the link, and `~/.claude` was missing until `move-config`'s undo.) A reader finds
/// it at every pause and every instant, and the world ends exactly as before the migration.
#[test]
fn claude_dir_never_stops_resolving_during_the_undo() {
    let w = World::realistic();
    let before = w.manifest();
    let r = run(w.cmd().args(["--yes"]));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    // Before the link step's undo, after it, and after move-config's.
    let points = [
        "undo-link-claude-dir",
        "undo-secure-config-dir",
        "undo-move-config",
        "undo-create-shared-dir",
    ];
    let probe = w.claude().join("settings.json");
    never_missing(w.cmd_sub("undo").args(["--yes"]), &points, &probe, |_| {});
    assert!(fs::symlink_metadata(w.claude()).unwrap().is_dir());
    assert_same(&before, &w.manifest(), "after the undo");
}

/// Between the two halves of the switch: the link is made at the config dir's name, and
/// `~/.claude` is still the directory.
#[test]
fn the_link_is_made_before_the_names_are_exchanged() {
    let w = World::realistic();
    let claude_before = manifest(&w.claude());
    let json_before = fs::read(w.claude_json()).unwrap();
    let probe = w.claude().join("settings.json");
    let want = fs::read(&probe).unwrap();
    let pt = "linked-move-config";
    let mut p = spawn_paused(w.cmd().args(["--yes"]), &[pt]);
    assert!(p.reached(pt), "the run never reached {pt}");
    assert!(fs::symlink_metadata(w.claude()).unwrap().is_dir());
    assert_eq!(fs::read_link(config(&w)).unwrap(), config(&w));
    assert_eq!(fs::read(&probe).unwrap(), want);
    let r = p.finish(&[pt]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_migrated(&w, &claude_before, &json_before, "after the pause");
}

/// Killed at each new point (the link made, not yet exchanged), the next run finishes the
/// migration, or `undo` puts the world back exactly.
#[test]
fn a_kill_around_the_switch_is_finished_or_undone() {
    for (fp, finish) in [
        ("linked-move-config", true),
        ("linked-move-config", false),
        ("applied-move-config", true),
        ("applied-move-config", false),
    ] {
        let w = World::realistic();
        let before = w.manifest();
        let claude_before = manifest(&w.claude());
        let json_before = fs::read(w.claude_json()).unwrap();
        let what = format!(
            "kill at {fp}, then {}",
            if finish { "resume" } else { "undo" }
        );
        let st = w
            .cmd()
            .args(["--yes", "--json"])
            .env("DCI_FAILPOINTS", format!("{fp}=kill"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(st.signal(), Some(9), "{what}: not killed: {st:?}");
        if finish {
            let r = run(w.cmd().args(["--yes"]));
            assert_eq!(r.code, 0, "{what}: {}\n{}", r.stdout, r.stderr);
            assert_migrated(&w, &claude_before, &json_before, &what);
        } else {
            let r = run(w.cmd_sub("undo").args(["--yes"]));
            assert_eq!(r.code, 0, "{what}: {}\n{}", r.stdout, r.stderr);
            assert_same(&before, &w.manifest(), &what);
        }
    }
}

/// A rollback after the switch (a later step fails) swaps the names back: `~/.claude` is the
/// directory again and the world is as before.
#[test]
fn a_rollback_after_the_switch_swaps_back() {
    let w = World::realistic();
    let before = w.manifest();
    let r = run(w
        .cmd()
        .args(["--yes"])
        .env("DCI_FAILPOINTS", "apply-link-claude-dir=error"));
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert_same(&before, &w.manifest(), "rolled back after the switch");
}
