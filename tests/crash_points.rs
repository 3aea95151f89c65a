//! Issue 12: SIGKILL at every mutating system call of a migration (one file system, and across
//! two) and of `undo`, then recovery both ways, compared with full manifests, mtimes included.
//!
//! For each scenario: one clean run is traced with strace and its mutating calls on the world
//! enumerated (namespace: mkdir, rename, symlink, link, unlink, rmdir, open with O_CREAT,
//! O_TRUNC, O_WRONLY or O_RDWR; metadata: chmod, chown, utimensat, truncate; data: write,
//! copy_file_range). Then, for the k-th of them, in a world rebuilt identically at the same
//! paths, the binary is killed on entry to exactly that call (see `common::crash`), and:
//!
//! - `status` must exit 0 and change nothing;
//! - for a killed migration: `migrate --yes` must exit 0 and leave exactly the world a clean
//!   migration leaves (only the mtimes and journal bytes that differ between two clean runs are
//!   overlooked), then `undo --yes` exactly the original world; and, killed again at the same
//!   call, `undo --yes` straight away must leave exactly the original world;
//! - for a killed undo: `undo --yes` must leave exactly the original world.
//!
//! "Exactly" is strict: every path, kind, mode, owner, size, content, link target, hard-link
//! group and mtime (directories included), so a probe, temp file, staging or state directory
//! left anywhere in the world fails, and so does a directory whose mtime was not put back.
//!
//! Needs root (PID and mount namespaces) and strace (`.ci/run` installs it). Two worker threads.
//! `DCI_CRASH_ONLY=3,17` runs only those points (development; it says so loudly).

mod common;

use common::crash::*;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const THREADS: usize = 2;

/// The scenarios run one after the other (the harness runs tests in parallel): two threads in
/// all, not two per scenario.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Where the time goes, per stage (printed at the end of each scenario).
static TIMES: Mutex<BTreeMap<&'static str, (u32, Duration)>> = Mutex::new(BTreeMap::new());

fn timed<T>(stage: &'static str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let r = f();
    let mut g = TIMES.lock().unwrap_or_else(|p| p.into_inner());
    let e = g.entry(stage).or_default();
    e.0 += 1;
    e.1 += t.elapsed();
    r
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind2 {
    Migrate,
    Undo,
}

struct Scenario {
    name: &'static str,
    cross: bool,
    what: Kind2,
}

impl Scenario {
    /// The world's `/var/lib/disinto` is missing (a fresh machine): `create-shared-dir` makes
    /// it and the shared dir, and `undo` removes both. Same filesystem only.
    fn without_var_lib(&self) -> bool {
        self.name.ends_with("-fresh-var")
    }
}

/// What one slot needs to judge a point: its worlds before and after a clean migration.
struct Refs {
    original: Manifest,
    migrated: Manifest,
}

#[derive(Debug, Clone)]
struct Failure {
    k: usize,
    call: String,
    stage: &'static str,
    /// The run's exit and stderr, when it did not exit 0.
    outcome: Option<String>,
    /// Differences from the expected world.
    detail: Vec<String>,
}

fn args_of(what: Kind2) -> &'static [&'static str] {
    match what {
        Kind2::Migrate => &["--yes"],
        Kind2::Undo => &["undo", "--yes"],
    }
}

/// A clean migration in `w`; panics if it fails (the harness is broken then, not a point).
fn migrate_clean(w: &World) {
    let o = exec(&mut tool(w, &[], &["--yes"]));
    assert!(
        o.ok(),
        "clean migration failed: {}\n{}",
        o.brief(),
        o.stdout
    );
}

fn only() -> Option<Vec<usize>> {
    let v = std::env::var("DCI_CRASH_ONLY").ok()?;
    let ks: Vec<usize> = v.split(',').filter_map(|x| x.trim().parse().ok()).collect();
    eprintln!("DCI_CRASH_ONLY={v}: running only points {ks:?} (NOT the full test)");
    Some(ks)
}

/// Build the world the point needs and kill the binary at the point's call. Tries each aim in
/// turn; Err when none provably hits the call.
fn kill(slot: &Slot, sc: &Scenario, p: &Point, out: &Path) -> Result<World, Failure> {
    let mut misses = Vec::new();
    for aim in &p.aims {
        // The world the run starts from: the original one, or the migrated one for undo.
        let start = match sc.what {
            Kind2::Migrate => "original",
            Kind2::Undo => "migrated",
        };
        timed("restore", || slot.restore(start));
        let w = slot.current();
        match timed("kill run", || {
            kill_at(&w, args_of(sc.what), &p.call, aim, out)
        }) {
            Kill::Hit => return Ok(w),
            Kill::Missed(why) => {
                misses.push(format!("-P {} when={}: {why}", esc(&aim.path), aim.when))
            }
        }
    }
    if p.aims.is_empty() {
        misses.push("no path strace can match this call on".into());
    }
    Err(Failure {
        k: p.k,
        call: p.call.show(),
        stage: "kill not reached (harness)",
        outcome: None,
        detail: misses,
    })
}

/// `status` exits 0 and changes nothing.
fn check_status(w: &World, p: &Point, fails: &mut Vec<Failure>) {
    let before = timed("manifest", || w.manifest());
    let o = timed("status", || exec(&mut tool(w, &[], &["status"])));
    let after = timed("manifest", || w.manifest());
    let d = diff(&before, &after, Ignore::default());
    if !o.ok() || !d.is_empty() {
        fails.push(Failure {
            k: p.k,
            call: p.call.show(),
            stage: "status after the kill",
            outcome: (!o.ok()).then(|| o.brief()),
            detail: d,
        });
    }
}

/// `undo --yes` exits 0 and leaves exactly `original`.
fn check_undo(w: &World, original: &Manifest, p: &Point, stage: &'static str) -> Option<Failure> {
    let o = timed("undo", || exec(&mut tool(w, &[], &["undo", "--yes"])));
    let mut d = diff(
        original,
        &timed("manifest", || w.manifest()),
        Ignore::default(),
    );
    d.extend(xattr_leftovers(w));
    if o.ok() && d.is_empty() {
        return None;
    }
    Some(Failure {
        k: p.k,
        call: p.call.show(),
        stage,
        outcome: (!o.ok()).then(|| o.brief()),
        detail: d,
    })
}

fn check_point(
    slot: &Slot,
    sc: &Scenario,
    refs: &Refs,
    vol: &Volatile,
    p: &Point,
    out: &Path,
) -> Vec<Failure> {
    let mut fails = Vec::new();
    let w = match kill(slot, sc, p, out) {
        Ok(w) => w,
        Err(f) => return vec![f],
    };
    let killed = timed("manifest", || w.manifest());
    if sc.what == Kind2::Migrate {
        timed("snapshot", || slot.snapshot("killed"));
    }
    check_status(&w, p, &mut fails);
    match sc.what {
        Kind2::Undo => {
            fails.extend(check_undo(
                &w,
                &refs.original,
                p,
                "undo after a killed undo",
            ));
        }
        Kind2::Migrate => {
            // Finish it.
            let o = timed("resume", || exec(&mut tool(&w, &[], &["--yes"])));
            let got = timed("manifest", || w.manifest());
            let mut d = diff_migrated(&refs.migrated, &got, vol);
            d.extend(xattr_leftovers(&w));
            if !o.ok() || !d.is_empty() {
                fails.push(Failure {
                    k: p.k,
                    call: p.call.show(),
                    stage: "migrate after the kill",
                    outcome: (!o.ok()).then(|| o.brief()),
                    detail: d,
                });
            } else {
                fails.extend(check_undo(
                    &w,
                    &refs.original,
                    p,
                    "undo after the resumed migration",
                ));
            }
            // Or reverse it: from the same killed state.
            timed("restore", || slot.restore("killed"));
            assert_same(
                &killed,
                &timed("manifest", || w.manifest()),
                "the killed world, restored from its snapshot",
            );
            fails.extend(check_undo(&w, &refs.original, p, "undo after the kill"));
        }
    }
    fails
}

/// Group failures by stage and by the paths their differences name; one line per group.
fn summary(sc: &Scenario, n: usize, fails: &[Failure]) -> String {
    let mut groups: BTreeMap<(String, Vec<String>), Vec<&Failure>> = BTreeMap::new();
    for f in fails {
        let mut key: Vec<String> = f.detail.iter().map(|l| normalise(l)).collect();
        key.sort();
        key.dedup();
        if f.stage.starts_with("kill not reached") {
            key.clear();
        }
        if let Some(o) = &f.outcome {
            key.insert(0, o.split(':').next().unwrap_or_default().to_string());
        }
        groups
            .entry((f.stage.to_string(), key))
            .or_default()
            .push(f);
    }
    let mut s = format!(
        "{}: {} failure(s) at {} distinct point(s) of {n}, in {} group(s)",
        sc.name,
        fails.len(),
        fails.iter().map(|f| f.k).collect::<BTreeSet<_>>().len(),
        groups.len()
    );
    for ((stage, _), fs) in &groups {
        let ks: Vec<String> = fs.iter().map(|f| f.k.to_string()).collect();
        let ex = fs[0];
        s.push_str(&format!(
            "\n- {stage}: {} point(s) [{}]\n    e.g. k={} at `{}`:",
            fs.len(),
            ks.join(","),
            ex.k,
            ex.call
        ));
        if let Some(o) = &ex.outcome {
            s.push_str(&format!("\n      {o}"));
        }
        for l in ex.detail.iter().take(8) {
            s.push_str(&format!("\n      {l}"));
        }
        if ex.detail.len() > 8 {
            s.push_str(&format!("\n      ... and {} more", ex.detail.len() - 8));
        }
    }
    s
}

/// Everything the points of a scenario need: the slots (one per thread), their references,
/// what differs between two clean runs, and the points (rebased for each slot).
struct Prepared {
    slots: Vec<Slot>,
    refs: Vec<Refs>,
    vol: Volatile,
    points: Vec<Vec<Point>>,
}

/// None (a recorded skip) without root or strace.
fn prepare(sc: &Scenario, n: usize) -> Option<Prepared> {
    if !crash_tests_can_run() {
        return None;
    }
    let slots: Vec<Slot> = (0..n)
        .map(|i| {
            let mut s = Slot::new(sc.name, i, sc.cross);
            s.with_var_lib = !sc.without_var_lib();
            s
        })
        .collect();
    let trace_file = slots[0].tmp_root.with_extension("trace");

    // The references of each slot: the world, and the world after a clean migration.
    let refs: Vec<Refs> = slots
        .iter()
        .map(|s| {
            let w = s.world();
            let original = w.manifest();
            s.snapshot("original");
            migrate_clean(&w);
            s.snapshot("migrated");
            Refs {
                original,
                migrated: w.manifest(),
            }
        })
        .collect();

    // The traced clean run, in slot 0, from the same snapshot as every kill run: a directory's
    // entries then come in the same order (tmpfs lists them by creation), and so do the calls.
    let start = match sc.what {
        Kind2::Migrate => "original",
        Kind2::Undo => "migrated",
    };
    slots[0].restore(start);
    let w = slots[0].current();
    if sc.what == Kind2::Migrate {
        assert_same(
            &refs[0].original,
            &w.manifest(),
            "the slot's world is restored identically",
        );
    }
    let (o, calls) = trace_run(&w, args_of(sc.what), &trace_file);
    assert!(o.ok(), "{}: the traced run failed: {}", sc.name, o.brief());
    let after = w.manifest();
    let vol = match sc.what {
        Kind2::Migrate => Volatile::between(&refs[0].migrated, &after),
        Kind2::Undo => {
            assert_same(
                &refs[0].original,
                &after,
                "a clean undo restores the world exactly",
            );
            Volatile::default()
        }
    };
    let roots0 = root_bytes(&w);
    let pts = points(&calls, &roots0);
    let _ = fs::remove_file(&trace_file);
    assert!(
        pts.len() > 10,
        "{}: only {} mutating calls traced:\n{:#?}",
        sc.name,
        pts.len(),
        calls.iter().take(50).collect::<Vec<_>>()
    );
    let mut by_name: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &pts {
        *by_name.entry(p.call.name.as_str()).or_default() += 1;
    }
    eprintln!(
        "{}: {} mutating calls on the world ({} traced calls in all): {:?}; volatile after a clean run: mtimes of {:?}, contents of {:?}",
        sc.name,
        pts.len(),
        calls.len(),
        by_name,
        vol.mtime.iter().map(|k| esc(k)).collect::<Vec<_>>(),
        vol.content.iter().map(|k| esc(k)).collect::<Vec<_>>()
    );
    if std::env::var_os("DCI_CRASH_LIST").is_some() {
        for p in &pts {
            let aim = p
                .aims
                .first()
                .map(|a| format!("-P {} when={}", esc(&a.path), a.when))
                .unwrap_or_default();
            eprintln!(
                "  k={:3} tid={} {}   [{aim}]",
                p.k,
                p.call.tid,
                p.call.show()
            );
        }
    }
    let points: Vec<Vec<Point>> = slots
        .iter()
        .map(|s| rebase(&pts, &roots0, &root_bytes(&s.current())))
        .collect();
    Some(Prepared {
        slots,
        refs,
        vol,
        points,
    })
}

fn run_scenario(sc: Scenario) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let t0 = Instant::now();
    let Some(Prepared {
        slots,
        refs,
        vol,
        points: per_slot,
    }) = prepare(&sc, THREADS)
    else {
        return;
    };
    let pts = &per_slot[0];
    let todo: Vec<usize> = match only() {
        Some(ks) => ks
            .into_iter()
            .filter(|k| *k >= 1 && *k <= pts.len())
            .map(|k| k - 1)
            .collect(),
        None => (0..pts.len()).collect(),
    };
    let next = AtomicUsize::new(0);
    let fails: Mutex<Vec<Failure>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (slot, refs, pts, next, fails, todo, vol, sc) = (
                &slots[t],
                &refs[t],
                &per_slot[t],
                &next,
                &fails,
                &todo,
                &vol,
                &sc,
            );
            s.spawn(move || {
                let out = slot.tmp_root.with_extension("kill");
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&idx) = todo.get(i) else { break };
                    let f = check_point(slot, sc, refs, vol, &pts[idx], &out);
                    fails.lock().unwrap().extend(f);
                }
                let _ = fs::remove_file(&out);
            });
        }
    });
    let mut fails = fails.into_inner().unwrap();
    fails.sort_by_key(|f| f.k);
    let report = summary(&sc, pts.len(), &fails);
    eprintln!(
        "{report}\n{}: {} points checked in {:.1?}",
        sc.name,
        todo.len(),
        t0.elapsed()
    );
    {
        let mut g = TIMES.lock().unwrap_or_else(|p| p.into_inner());
        for (k, (n, d)) in g.iter() {
            eprintln!("  {k:>14}: {n:5} x, {d:.1?}");
        }
        g.clear();
    }
    assert!(fails.is_empty(), "{report}");
}

#[test]
fn kill_at_every_call_of_a_migration_on_one_filesystem() {
    run_scenario(Scenario {
        name: "migrate-same-fs",
        cross: false,
        what: Kind2::Migrate,
    });
}

#[test]
fn kill_at_every_call_of_a_migration_across_filesystems() {
    run_scenario(Scenario {
        name: "migrate-cross-fs",
        cross: true,
        what: Kind2::Migrate,
    });
}

#[test]
fn kill_at_every_call_of_undo_on_one_filesystem() {
    run_scenario(Scenario {
        name: "undo-same-fs",
        cross: false,
        what: Kind2::Undo,
    });
}

#[test]
fn kill_at_every_call_of_undo_across_filesystems() {
    run_scenario(Scenario {
        name: "undo-cross-fs",
        cross: true,
        what: Kind2::Undo,
    });
}

// ---------------------------------------------------------------------------------------------
// The five classes of issue 12, one point each: the exact call, checked like every point above.
// ---------------------------------------------------------------------------------------------

/// The call's object (see `Call::target`) contains `needle`.
fn names(c: &Call, needle: &str) -> bool {
    c.target()
        .is_some_and(|t| t.windows(needle.len()).any(|w| w == needle.as_bytes()))
}

/// Kill at the first mutating call `pick` accepts, then recover both ways (or undo again, for
/// an undo), exactly as the exhaustive test does for every call.
fn targeted(sc: Scenario, what: &str, pick: impl Fn(&Call) -> bool) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let Some(pr) = prepare(&sc, 1) else { return };
    let p = pr.points[0]
        .iter()
        .find(|p| pick(&p.call))
        .unwrap_or_else(|| panic!("{}: no {what} in the trace", sc.name));
    eprintln!("{}: killing at k={} `{}`", sc.name, p.k, p.call.show());
    let out = pr.slots[0].tmp_root.with_extension("kill");
    let fails = check_point(&pr.slots[0], &sc, &pr.refs[0], &pr.vol, p, &out);
    let _ = fs::remove_file(&out);
    assert!(fails.is_empty(), "{what}: {}", summary(&sc, 1, &fails));
}

/// Class 1: killed at the `rmdir` of verify's probe (an `unlinkat(AT_REMOVEDIR)` in its parent's
/// descriptor), after the last journal write. Resume must remove the probe; undo must not trip
/// over it.
#[test]
fn class1_a_probe_stranded_by_a_kill_in_verify_is_removed() {
    targeted(
        Scenario {
            name: "class1-probe",
            cross: false,
            what: Kind2::Migrate,
        },
        "rmdir of verify's probe",
        |c| (c.name == "rmdir" || c.name == "unlinkat") && names(c, ".dci-probe-"),
    );
}

/// Class 2: `undo` killed after it removed the journal, while it removes the state
/// directories: a second `undo` must finish (state directories gone, mtimes back).
#[test]
fn class2_an_undo_killed_after_its_journal_is_gone_is_finished_by_the_next() {
    targeted(
        Scenario {
            name: "class2-late-undo",
            cross: false,
            what: Kind2::Undo,
        },
        "rmdir of the journal's directory",
        |c| {
            (c.name == "rmdir" || c.name == "unlinkat")
                && c.target()
                    .is_some_and(|t| t.ends_with(b"/state/disinto/claude-init"))
        },
    );
}

/// Class 3: killed while a journal temp file exists (at its `fchmod`: the journal stays its
/// writer's since issue 10, so there is no `fchown`): resume must remove the dead run's temp file.
#[test]
fn class3_resume_removes_the_dead_runs_journal_temp_file() {
    targeted(
        Scenario {
            name: "class3-journal-temp",
            cross: false,
            what: Kind2::Migrate,
        },
        "fchmod of a journal temp file",
        |c| {
            c.name == "fchmod"
                && names(
                    c,
                    "/.local/state/disinto/claude-init/.journal.json.dci-tmp-",
                )
        },
    );
}

/// Class 4: killed at the `utimensat` that puts the config dir's mtime back after
/// `~/.claude.json` moved in: resume must put it back.
#[test]
fn class4_resume_restores_the_config_dirs_mtime() {
    targeted(
        Scenario {
            name: "class4-config-mtime",
            cross: false,
            what: Kind2::Migrate,
        },
        "utimensat of the config dir",
        |c| {
            c.name == "utimensat"
                && c.target()
                    .is_some_and(|t| t.ends_with(b"/claude-shared/config"))
        },
    );
}

/// Class 5: killed while the first state directories are made, before any journal exists:
/// the home's mtime (disturbed by `~/.local`) must come back.
#[test]
fn class5_the_homes_mtime_survives_a_kill_before_the_first_journal() {
    targeted(
        Scenario {
            name: "class5-first-state-dir",
            cross: false,
            what: Kind2::Migrate,
        },
        // Made with mkdirat and given its mode through its descriptor (issue 10): fchmod.
        "fchmod of the first state directory being built",
        |c| c.name == "fchmod" && names(c, "/..local.dci-state-"),
    );
}

/// On a fresh machine (no `/var/lib/disinto`), `create-shared-dir` makes two directories and
/// `undo` removes both: killed between the two removals (or just after the second), the next
/// undo finds the inner one gone, and its parent too.
#[test]
fn kill_at_every_call_of_undo_on_a_fresh_machine() {
    run_scenario(Scenario {
        name: "undo-same-fs-fresh-var",
        cross: false,
        what: Kind2::Undo,
    });
}

/// The harness itself: a point found in slot 0 is aimed in slot 1 at slot 1's paths, the
/// literal `/proc/self/fd/N/./name` form and a relative name that is a root's own name
/// included (both seen as "kill not reached" before they were rebased), and `-P` is offered
/// the relative name strace matches on.
#[test]
fn points_rebase_to_another_slot_literal_and_relative_names_included() {
    let trace = "\
10002 openat(AT_FDCWD</x>, \"/tmp/w-0/home/.claude\", O_RDONLY|O_DIRECTORY|O_CLOEXEC) = 5</tmp/w-0/home/.claude>
10002 renameat(AT_FDCWD</x>, \"/tmp/w-0/home/a\", AT_FDCWD</x>, \"/proc/self/fd/5/./a\") = 0
10002 utimensat(7</dev>, \"w-0\", [{tv_sec=1, tv_nsec=0}, {tv_sec=1, tv_nsec=0}], AT_SYMLINK_NOFOLLOW) = 0
10003 unlinkat(5</tmp/w-0/home/.claude>, \"ide\", AT_REMOVEDIR) = 0
";
    let calls = parse_trace(trace);
    let from = vec![b"/tmp/w-0".to_vec(), b"/dev/w-0".to_vec()];
    let to = vec![b"/tmp/w-1".to_vec(), b"/dev/w-1".to_vec()];
    let pts = points(&calls, &from);
    assert_eq!(pts.len(), 3, "{pts:#?}");
    let moved = rebase(&pts, &from, &to);
    let rename = &moved[0].call;
    assert_eq!(
        rename.target2().as_deref(),
        Some(&b"/tmp/w-1/home/.claude/a"[..])
    );
    let killed = parse_trace(
        "10002 renameat(AT_FDCWD</x>, \"/tmp/w-1/home/a\", AT_FDCWD</x>, \"/proc/self/fd/5/./a\" <unfinished ...>\n",
    );
    assert!(killed[0].same_as(rename), "{rename:#?} vs {killed:#?}");
    let utime = &moved[1];
    assert!(
        utime.aims.iter().any(|a| a.path == b"w-1"),
        "{:#?}",
        utime.aims
    );
    assert!(
        parse_trace("10002 utimensat(7</dev>, \"w-1\", NULL, 0 <unfinished ...>\n")[0]
            .same_as(&utime.call)
    );
    let unlink = &moved[2];
    assert!(
        unlink.aims.iter().any(|a| a.path == b"ide" && a.one_thread),
        "{:#?}",
        unlink.aims
    );
}
