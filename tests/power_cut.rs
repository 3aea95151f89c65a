//! Issue 12, stretch: a power cut is not a kill (the ALICE / CrashMonkey idea).
//!
//! A kill leaves every system call made so far in effect. A power cut may also lose what was
//! not yet on disk: a POSIX file system keeps a change to a directory's entries only once that
//! directory was fsynced (or its file system synced), and a change to a file's data or metadata
//! only once that file was. So, from a trace of a clean migration (or undo) on one file system:
//!
//! - the run's mutating calls are put in *streams*: a name created, renamed or removed belongs to
//!   the directory holding it (a rename to both); a mode, owner, mtime or data change to its
//!   object (a symlink's to its directory). A call is durable at a crash point when one of its
//!   streams was fsynced (or its file system synced) after it and before that point;
//! - for every crash point (after each call), the states a file system may legally leave are
//!   generated: everything not yet durable lost; and, stream by stream, every order-preserving
//!   prefix of that stream's not-yet-durable calls kept, everything else kept too;
//! - each distinct state is built on disk (the original world, then the kept calls replayed in
//!   order; a call that cannot apply because something it needs was lost is lost too), and
//!   recovered: `migrate --yes` must exit 0 and leave the migrated world, then `undo --yes` the
//!   original one. Directory mtimes are overlooked (a power cut may lose a restored mtime, as
//!   docs/recovery.md says); everything else counts, file mtimes included.
//!
//! The states where nothing is lost are the kill states of `crash_points.rs` and are not
//! repeated here. Needs root and strace.

mod common;

use common::crash::*;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Instant;

fn parent(p: &[u8]) -> Vec<u8> {
    match p.iter().rposition(|&b| b == b'/') {
        Some(0) => b"/".to_vec(),
        Some(i) => p[..i].to_vec(),
        None => b".".to_vec(),
    }
}

fn p(b: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(b))
}

/// A mutating call and the objects whose fsync makes it durable.
struct Op {
    call: Call,
    streams: Vec<Vec<u8>>,
}

fn is_namespace(name: &str) -> bool {
    matches!(
        name,
        "mkdir"
            | "mkdirat"
            | "symlink"
            | "symlinkat"
            | "link"
            | "linkat"
            | "unlink"
            | "unlinkat"
            | "rmdir"
            | "rename"
            | "renameat"
            | "renameat2"
    )
}

fn ops_of(calls: &[Call], roots: &[Vec<u8>]) -> (Vec<Op>, Vec<(usize, Call)>) {
    let mut ops = Vec::new();
    let mut syncs = Vec::new(); // (number of ops before it, the sync call)
    let mut symlinks: BTreeSet<Vec<u8>> = BTreeSet::new();
    for c in calls {
        if c.ret.as_deref().is_none_or(|r| r.starts_with("-1")) {
            continue;
        }
        if matches!(c.name.as_str(), "fsync" | "fdatasync" | "syncfs" | "sync") {
            syncs.push((ops.len(), c.clone()));
            continue;
        }
        if !c.is_mutating() || !c.touches(roots) {
            continue;
        }
        let Some(x) = c.target() else { continue };
        let creates = c.open_flags().contains("O_CREAT");
        let streams = if is_namespace(&c.name) || creates {
            let mut v = vec![parent(&x)];
            if let Some(b) = c.target2() {
                v.push(parent(&b));
            }
            if c.name.starts_with("symlink") {
                symlinks.insert(x.clone());
            }
            v
        } else if symlinks.contains(&x) {
            vec![parent(&x)]
        } else {
            vec![x.clone()]
        };
        if c.name.starts_with("rename") {
            if let Some(b) = c.target2() {
                let (was_x, was_b) = (symlinks.remove(&x), symlinks.remove(&b));
                if was_x {
                    symlinks.insert(b.clone());
                }
                // RENAME_EXCHANGE: the two names swap (a plain rename replaced `b`).
                if was_b && other(c, 4).contains("RENAME_EXCHANGE") {
                    symlinks.insert(x.clone());
                }
            }
        }
        ops.push(Op {
            call: c.clone(),
            streams,
        });
    }
    (ops, syncs)
}

/// Whether op `j` is durable at crash point `i` (after `i` ops).
fn durable(j: usize, i: usize, ops: &[Op], syncs: &[(usize, Call)], roots: &[Vec<u8>]) -> bool {
    let fs_of = |q: &[u8]| roots.iter().position(|r| under(q, r));
    syncs.iter().any(|(at, s)| {
        *at > j
            && *at <= i
            && s.target().is_some_and(|t| match s.name.as_str() {
                "syncfs" => ops[j]
                    .streams
                    .iter()
                    .any(|st| fs_of(st).is_some() && fs_of(st) == fs_of(&t)),
                "sync" => true,
                _ => ops[j].streams.contains(&t),
            })
    })
}

/// The distinct sets of kept ops a power cut may leave, over every crash point, excluding the
/// ones where nothing is lost.
/// Each with the first crash point (number of calls made) that leaves it.
fn states(ops: &[Op], syncs: &[(usize, Call)], roots: &[Vec<u8>]) -> BTreeMap<Vec<usize>, usize> {
    let mut out = BTreeMap::new();
    for i in 1..=ops.len() {
        let lost: Vec<usize> = (0..i)
            .filter(|&j| !durable(j, i, ops, syncs, roots))
            .collect();
        if lost.is_empty() {
            continue;
        }
        let keep_all_but = |drop: &BTreeSet<usize>| -> Vec<usize> {
            (0..i).filter(|j| !drop.contains(j)).collect()
        };
        out.entry(keep_all_but(&lost.iter().copied().collect()))
            .or_insert(i);
        let mut by_stream: BTreeMap<&Vec<u8>, Vec<usize>> = BTreeMap::new();
        for &j in &lost {
            by_stream.entry(&ops[j].streams[0]).or_default().push(j);
        }
        for js in by_stream.values() {
            for cut in 0..js.len() {
                let drop: BTreeSet<usize> = js[cut..].iter().copied().collect();
                out.entry(keep_all_but(&drop)).or_insert(i);
            }
        }
    }
    out
}

fn octal(s: &str) -> Option<u32> {
    u32::from_str_radix(s.trim_start_matches("0o").trim_start_matches('0'), 8)
        .ok()
        .or((s.trim_start_matches('0').is_empty()).then_some(0))
}

/// `{tv_sec=1, tv_nsec=2}` pairs in a utimensat times argument; None for UTIME_OMIT/UTIME_NOW.
fn times(arg: &str) -> Vec<Option<(i64, i64)>> {
    let mut v = Vec::new();
    for part in arg.trim_matches(|c| c == '[' || c == ']').split("},") {
        let part = part.trim();
        if part.starts_with("UTIME_OMIT") {
            v.push(None);
            // "UTIME_OMIT, {tv_sec..." arrives in one piece: split again.
            if let Some(rest) = part.split_once(", ").map(|x| x.1) {
                v.push(parse_ts(rest));
            }
            continue;
        }
        v.push(parse_ts(part));
    }
    v
}

fn parse_ts(s: &str) -> Option<(i64, i64)> {
    let sec = s
        .split("tv_sec=")
        .nth(1)?
        .split(',')
        .next()?
        .trim()
        .parse()
        .ok()?;
    let nsec = s
        .split("tv_nsec=")
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    Some((sec, nsec))
}

fn other(c: &Call, i: usize) -> String {
    match c.args.get(i) {
        Some(Arg::Other(s)) => s.clone(),
        _ => String::new(),
    }
}

fn data(c: &Call) -> Option<Vec<u8>> {
    match c.args.get(1) {
        Some(Arg::Str(s)) => Some(s.clone()),
        _ => None,
    }
}

/// Apply one traced call to the disk again. Err: it cannot apply (what it needs was lost).
fn replay(c: &Call, offsets: &mut BTreeMap<Vec<u8>, u64>) -> std::io::Result<()> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let x = c
        .target()
        .ok_or_else(|| std::io::Error::other("no target"))?;
    let err = |m: &str| std::io::Error::other(m.to_string());
    match c.name.as_str() {
        "mkdir" | "mkdirat" => {
            let mode = octal(&other(c, if c.name == "mkdir" { 1 } else { 2 })).unwrap_or(0o700);
            fs::DirBuilder::new().mode(mode).create(p(&x))
        }
        "open" | "openat" => {
            let flags = c.open_flags().to_string();
            let mode = octal(&other(c, if c.name == "open" { 2 } else { 3 })).unwrap_or(0o600);
            let mut o = fs::OpenOptions::new();
            o.write(true).mode(mode);
            if flags.contains("O_CREAT") {
                o.create(true);
            }
            if flags.contains("O_EXCL") {
                o.create_new(true);
            }
            if flags.contains("O_TRUNC") {
                o.truncate(true);
            }
            o.open(p(&x))?;
            offsets.insert(x, 0);
            Ok(())
        }
        "write" | "pwrite64" => {
            let d = data(c).ok_or_else(|| err("no data"))?;
            let f = fs::OpenOptions::new().write(true).open(p(&x))?;
            let off = offsets.entry(x).or_insert(0);
            f.write_all_at(&d, *off)?;
            *off += d.len() as u64;
            Ok(())
        }
        "chmod" | "fchmod" | "fchmodat" => {
            let i = match c.name.as_str() {
                "fchmodat" => 2,
                _ => 1,
            };
            let mode = octal(&other(c, i)).ok_or_else(|| err("mode"))?;
            fs::set_permissions(p(&x), fs::Permissions::from_mode(mode))
        }
        "chown" | "fchown" | "lchown" | "fchownat" => {
            let i = if c.name == "fchownat" { 2 } else { 1 };
            let uid: u32 = other(c, i).parse().map_err(|_| err("uid"))?;
            let gid: u32 = other(c, i + 1).parse().map_err(|_| err("gid"))?;
            std::os::unix::fs::lchown(p(&x), Some(uid), Some(gid))
        }
        "utimensat" => {
            let t = times(&other(c, 2));
            let ts = |o: Option<&Option<(i64, i64)>>| match o {
                Some(Some((s, n))) => TimeSpec::new(*s, *n),
                _ => TimeSpec::new(0, (1 << 30) - 2), // UTIME_OMIT
            };
            utimensat(
                nix::fcntl::AT_FDCWD,
                p(&x),
                &ts(t.first()),
                &ts(t.get(1)),
                UtimensatFlags::NoFollowSymlink,
            )
            .map_err(std::io::Error::from)
        }
        "renameat2" if other(c, 4).contains("RENAME_EXCHANGE") => {
            let b = c.target2().ok_or_else(|| err("no new name"))?;
            nix::fcntl::renameat2(
                nix::fcntl::AT_FDCWD,
                p(&x),
                nix::fcntl::AT_FDCWD,
                p(&b),
                nix::fcntl::RenameFlags::RENAME_EXCHANGE,
            )
            .map_err(std::io::Error::from)
        }
        "rename" | "renameat" | "renameat2" => {
            let b = c.target2().ok_or_else(|| err("no new name"))?;
            fs::rename(p(&x), p(&b))
        }
        "symlink" | "symlinkat" => {
            let t = match c.args.first() {
                Some(Arg::Str(s)) => s.clone(),
                _ => return Err(err("no target")),
            };
            std::os::unix::fs::symlink(p(&t), p(&x))
        }
        "unlink" => fs::remove_file(p(&x)),
        "unlinkat" if other(c, 2).contains("AT_REMOVEDIR") => fs::remove_dir(p(&x)),
        "unlinkat" => fs::remove_file(p(&x)),
        "rmdir" => fs::remove_dir(p(&x)),
        "setxattr" | "lsetxattr" | "fsetxattr" => {
            let (name, value) = match (c.args.get(1), c.args.get(2)) {
                (Some(Arg::Str(n)), Some(Arg::Str(v))) => (n.clone(), v.clone()),
                _ => return Err(err("xattr name or value")),
            };
            let path = std::ffi::CString::new(x).map_err(|_| err("nul in path"))?;
            let name = std::ffi::CString::new(name).map_err(|_| err("nul in name"))?;
            // SAFETY: both C strings outlive the call; value is a valid slice.
            let r = unsafe {
                nix::libc::lsetxattr(
                    path.as_ptr(),
                    name.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                )
            };
            if r == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        }
        "removexattr" | "lremovexattr" | "fremovexattr" => {
            let name = match c.args.get(1) {
                Some(Arg::Str(n)) => n.clone(),
                _ => return Err(err("xattr name")),
            };
            let path = std::ffi::CString::new(x).map_err(|_| err("nul in path"))?;
            let name = std::ffi::CString::new(name).map_err(|_| err("nul in name"))?;
            // SAFETY: both C strings outlive the call.
            let r = unsafe { nix::libc::lremovexattr(path.as_ptr(), name.as_ptr()) };
            if r == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        }
        other => Err(err(&format!("replay of {other} not supported"))),
    }
}

/// `diff_migrated`, overlooking directory mtimes (a power cut may lose a restored one).
fn migrated_diffs(migrated: &Manifest, got: &Manifest, vol: &Volatile) -> Vec<String> {
    let mut vol = vol.clone();
    vol.mtime.extend(
        migrated
            .iter()
            .chain(got.iter())
            .filter(|(_, n)| n.kind == Kind::Dir)
            .map(|(k, _)| k.clone()),
    );
    diff_migrated(migrated, got, &vol)
}

/// What a scenario runs and how its states must recover.
#[derive(Clone, Copy, PartialEq, Debug)]
enum What {
    /// `migrate --yes` from the original world; a state recovers when `migrate --yes` reaches
    /// the migrated world and `undo --yes` then the original.
    Migrate,
    /// `undo --yes` from the migrated world; a state recovers when `undo --yes` reaches the
    /// original world.
    Undo,
}

fn power_cut(what: What, tag: &str) {
    if !crash_tests_can_run() {
        return;
    }
    let t0 = Instant::now();
    let slot = Slot::new(tag, 0, false);
    let w = slot.world();
    let original = w.manifest();
    slot.snapshot("original");
    let o = exec(&mut tool(&w, &[], &["--yes"]));
    assert!(o.ok(), "{}", o.brief());
    let migrated = w.manifest();
    slot.snapshot("migrated");
    let (start, args): (&str, &[&str]) = match what {
        What::Migrate => ("original", &["--yes"]),
        What::Undo => ("migrated", &["undo", "--yes"]),
    };
    slot.restore(start);
    let trace = slot.tmp_root.with_extension("trace");
    let (o, calls) = trace_run(&w, args, &trace);
    let _ = fs::remove_file(&trace);
    assert!(o.ok(), "{}", o.brief());
    let ignore = Ignore {
        dir_mtime: true,
        ..Default::default()
    };
    // What a clean run leaves, and how a state's end is compared with it.
    let vol = match what {
        What::Migrate => Volatile::between(&migrated, &w.manifest()),
        What::Undo => Volatile::default(),
    };
    let ends_right = |got: &Manifest| -> Vec<String> {
        match what {
            What::Migrate => migrated_diffs(&migrated, got, &vol),
            What::Undo => diff(&original, got, ignore),
        }
    };
    let roots = root_bytes(&w);
    let (ops, syncs) = ops_of(&calls, &roots);
    let all = states(&ops, &syncs, &roots);
    eprintln!(
        "power cut ({what:?}): {} mutating calls, {} fsync/syncfs, {} distinct states where something is lost",
        ops.len(),
        syncs.len(),
        all.len()
    );
    // The replay itself must be exact: all calls kept gives the clean run's world.
    slot.restore(start);
    let mut offsets = BTreeMap::new();
    let bad: Vec<String> = ops
        .iter()
        .filter_map(|op| {
            replay(&op.call, &mut offsets)
                .err()
                .map(|e| format!("{}: {e}", op.call.show()))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "replay of the clean run fails:\n{}",
        bad.join("\n")
    );
    let d = ends_right(&w.manifest());
    assert!(
        d.is_empty(),
        "the replayed clean run differs:\n{}",
        d.join("\n")
    );
    let mut failures: Vec<String> = Vec::new();
    let mut replay_skipped = 0usize;
    for (keep, &at) in &all {
        slot.restore(start);
        let mut offsets = BTreeMap::new();
        for &j in keep {
            if replay(&ops[j].call, &mut offsets).is_err() {
                replay_skipped += 1;
            }
        }
        let lost: Vec<String> = (0..at)
            .filter(|j| !keep.contains(j))
            .map(|j| ops[j].call.show())
            .collect();
        let what_cut = format!(
            "power cut after `{}`, lost [{}]",
            ops[at - 1].call.show(),
            lost.join(", ")
        );
        let o = exec(&mut tool(&w, &[], args));
        let mut d = ends_right(&w.manifest());
        if !o.ok() {
            d.insert(0, format!("{}: {}", args[0], o.brief()));
        }
        if what == What::Migrate && d.is_empty() {
            let o = exec(&mut tool(&w, &[], &["undo", "--yes"]));
            d = diff(&original, &w.manifest(), ignore);
            if !o.ok() {
                d.insert(0, format!("undo: {}", o.brief()));
            }
        }
        if !d.is_empty() {
            failures.push(format!("{what_cut}:\n      {}", d.join("\n      ")));
        }
    }
    let root = String::from_utf8_lossy(&roots[0]).into_owned();
    eprintln!(
        "power cut ({what:?}): {} states checked, {} recovered, {} failed ({} replayed calls could not apply: their inputs were lost); {:.1?}",
        all.len(),
        all.len() - failures.len(),
        failures.len(),
        replay_skipped,
        t0.elapsed()
    );
    assert!(
        all.len() > 10,
        "only {} power-cut states: the trace or the stream model is wrong",
        all.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} power-cut states did not recover:\n  {}",
        failures.len(),
        all.len(),
        failures
            .iter()
            .take(10)
            .map(|f| f.replace(&root, "W"))
            .collect::<Vec<_>>()
            .join("\n  ")
    );
}

#[test]
fn power_cut_states_of_a_migration_on_one_filesystem_recover() {
    power_cut(What::Migrate, "power-cut");
}

#[test]
fn power_cut_states_of_an_undo_on_one_filesystem_recover() {
    power_cut(What::Undo, "power-cut-undo");
}
