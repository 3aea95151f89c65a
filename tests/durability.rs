//! Issue 12, the durability rule: nothing the journal records as done can be lost by a power
//! cut after that record is on disk.
//!
//! Checked from an strace trace of a clean run of the real binary (all of `common::crash::TRACED`,
//! fsyncs included). Every change to the world leaves an obligation, discharged only by a later
//! `fsync` of the right object or a `syncfs` of its file system:
//!
//! - creating, removing or renaming a name (mkdir, open with O_CREAT, symlink, link, unlink,
//!   rmdir, rename) obliges an fsync of the directory holding the name (both directories for a
//!   rename);
//! - changing a file's or a directory's metadata or data (chmod, chown, utimensat, write)
//!   obliges an fsync of that object (of its directory, for a symlink, which cannot be fsynced).
//!
//! Then two rules:
//!
//! 1. **Before a journal record**: when a new journal is renamed into place (a record), no
//!    obligation of an earlier change may be pending (the change would not survive a power cut
//!    that the record survives). Obligations of names that were removed or renamed away since
//!    lapse (they are replaced by those of the removal or rename).
//! 2. **After a journal record**: the journal's directory is fsynced before the next change to
//!    the world (write-ahead: the record announcing a change is on disk before the change).
//!
//! The very first journal appears by renaming a staging directory into place: that rename is a
//! record too, so the directory chain built in the staging directory must be fsynced first.

mod common;

use common::crash::*;
use common::*;
use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;

#[derive(Debug, Clone)]
struct Ob {
    /// What must be fsynced.
    path: Vec<u8>,
    /// The change that left the obligation.
    why: String,
    /// The name the change created, if it created one (its obligation lapses with the name).
    created: Option<Vec<u8>>,
}

fn parent(p: &[u8]) -> Vec<u8> {
    match p.iter().rposition(|&b| b == b'/') {
        Some(0) => b"/".to_vec(),
        Some(i) => p[..i].to_vec(),
        None => b".".to_vec(),
    }
}

fn is_journal_record(c: &Call) -> Option<Vec<u8>> {
    if !c.name.starts_with("rename") {
        return None;
    }
    let (a, b) = (c.target()?, c.target2()?);
    let staged = |p: &[u8]| p.windows(11).any(|w| w == b".dci-state-");
    if b.ends_with(b"/journal.json") && !staged(&b) {
        return Some(parent(&b));
    }
    // The first journal: its staging directory renamed into place.
    let name = a.rsplit(|&x| x == b'/').next().unwrap_or(&a);
    if staged(name) {
        return Some(parent(&b));
    }
    None
}

fn rebase_path(p: &[u8], from: &[u8], to: &[u8]) -> Option<Vec<u8>> {
    under(p, from).then(|| [to, &p[from.len()..]].concat())
}

/// The violations of both rules in one trace, as readable lines.
fn check(calls: &[Call], roots: &[Vec<u8>]) -> Vec<String> {
    let fs_of = |p: &[u8]| roots.iter().position(|r| under(p, r));
    let mut pending: Vec<Ob> = Vec::new();
    // Symlinks made by the run (every symlink the tool changes the metadata of, it made).
    let mut symlinks: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut out = Vec::new();
    let mut reported: BTreeSet<String> = BTreeSet::new();
    // (journal dir, record index) awaiting its fsync (rule 2).
    let mut awaiting: Option<(Vec<u8>, usize)> = None;
    let mut records = 0usize;
    for c in calls {
        let failed = c.ret.as_deref().is_none_or(|r| r.starts_with("-1"));
        if failed {
            continue;
        }
        match c.name.as_str() {
            "fsync" | "fdatasync" => {
                if let Some(p) = c.target() {
                    pending.retain(|o| o.path != p);
                    if awaiting.as_ref().is_some_and(|(j, _)| *j == p) {
                        awaiting = None;
                    }
                }
                continue;
            }
            "syncfs" => {
                if let Some(fs) = c.target().and_then(|p| fs_of(&p)) {
                    pending.retain(|o| fs_of(&o.path) != Some(fs));
                    if awaiting.as_ref().is_some_and(|(j, _)| fs_of(j) == Some(fs)) {
                        awaiting = None;
                    }
                }
                continue;
            }
            "sync" => {
                pending.clear();
                awaiting = None;
                continue;
            }
            _ => {}
        }
        if !c.is_mutating() || !c.touches(roots) {
            continue;
        }
        let Some(x) = c.target() else { continue };
        // Rule 2: a change while the last record is not yet durable. Changes inside the
        // journal's own directory (the next journal write) do not count.
        if let Some((j, r)) = &awaiting {
            if parent(&x) != *j && x != *j {
                let line = format!(
                    "journal record #{r} (in {}) was not fsynced before the next change: {}",
                    esc(j),
                    c.show()
                );
                if reported.insert(line.clone()) {
                    out.push(line);
                }
                awaiting = None;
            }
        }
        // Rule 1.
        if let Some(jdir) = is_journal_record(c) {
            records += 1;
            let src = c.target();
            for o in &pending {
                if o.created.is_some() && o.created == src {
                    continue; // the journal's own temp file, renamed by this very record
                }
                let line = format!(
                    "journal record #{records} ({}) relies on `{}`, but {} was not fsynced",
                    c.show(),
                    o.why,
                    esc(&o.path)
                );
                let key = format!("{}|{}", o.why, esc(&o.path));
                if reported.insert(key) {
                    out.push(line);
                }
            }
            awaiting = Some((jdir, records));
        }
        // The change's own obligations.
        let why = c.show();
        let add = |pending: &mut Vec<Ob>, path: Vec<u8>, created: Option<Vec<u8>>| {
            pending.push(Ob {
                path,
                why: why.clone(),
                created,
            });
        };
        match c.name.as_str() {
            "open" | "openat" | "creat" => {
                if c.name == "creat" || c.open_flags().contains("O_CREAT") {
                    add(&mut pending, parent(&x), Some(x.clone()));
                }
            }
            "mkdir" | "mkdirat" | "symlink" | "symlinkat" => {
                if c.name.starts_with("symlink") {
                    symlinks.insert(x.clone());
                }
                add(&mut pending, parent(&x), Some(x.clone()));
            }
            "link" | "linkat" => {
                if let Some(n) = c.target2() {
                    add(&mut pending, parent(&n), Some(n));
                }
            }
            "unlink" | "unlinkat" | "rmdir" => {
                pending.retain(|o| !under(&o.path, &x));
                add(&mut pending, parent(&x), None);
            }
            "renameat2"
                if c.args
                    .iter()
                    .any(|a| matches!(a, Arg::Other(f) if f.contains("RENAME_EXCHANGE"))) =>
            {
                // The two names swap: what was under each is now under the other.
                let Some(b) = c.target2() else { continue };
                let swap = |p: &Vec<u8>| {
                    rebase_path(p, &x, &b)
                        .or_else(|| rebase_path(p, &b, &x))
                        .unwrap_or_else(|| p.clone())
                };
                for o in &mut pending {
                    o.path = swap(&o.path);
                    o.created = o.created.as_ref().map(swap);
                }
                symlinks = symlinks.iter().map(swap).collect();
                add(&mut pending, parent(&x), None);
                add(&mut pending, parent(&b), None);
            }
            "rename" | "renameat" | "renameat2" => {
                let Some(b) = c.target2() else { continue };
                pending.retain(|o| !under(&o.path, &b));
                pending.retain(|o| o.created.as_ref() != Some(&x));
                for o in &mut pending {
                    if let Some(p) = rebase_path(&o.path, &x, &b) {
                        o.path = p;
                    }
                    if let Some(cr) = &o.created {
                        if let Some(p) = rebase_path(cr, &x, &b) {
                            o.created = Some(p);
                        }
                    }
                }
                if symlinks.remove(&x) {
                    symlinks.insert(b.clone());
                }
                add(&mut pending, parent(&x), None);
                add(&mut pending, parent(&b), None);
            }
            _ => {
                // Metadata or data of x itself.
                let target = if symlinks.contains(&x) { parent(&x) } else { x };
                add(&mut pending, target, None);
            }
        }
    }
    assert!(records > 0, "no journal record found in the trace");
    out
}

fn trace_and_check(name: &str, cross: bool, undo: bool) {
    if !crash_tests_can_run() {
        return;
    }
    let slot = Slot::new(name, 0, cross);
    let w = slot.world();
    if undo {
        let o = exec(&mut tool(&w, &[], &["--yes"]));
        assert!(o.ok(), "{}", o.brief());
    }
    let out = slot.tmp_root.with_extension("trace");
    let args: &[&str] = if undo { &["undo", "--yes"] } else { &["--yes"] };
    let (o, calls) = trace_run(&w, args, &out);
    let _ = std::fs::remove_file(&out);
    assert!(o.ok(), "{name}: traced run: {}", o.brief());
    let v = check(&calls, &root_bytes(&w));
    let fsyncs = calls
        .iter()
        .filter(|c| matches!(c.name.as_str(), "fsync" | "fdatasync" | "syncfs"))
        .count();
    eprintln!(
        "{name}: {} traced calls, {fsyncs} fsync/fdatasync/syncfs, {} violation(s)",
        calls.len(),
        v.len()
    );
    let root = w.root.as_os_str().as_bytes().to_vec();
    let shown: Vec<String> = v
        .iter()
        .map(|l| l.replace(&*String::from_utf8_lossy(&root), "W"))
        .collect();
    assert!(
        v.is_empty(),
        "{name}: {} durability violation(s):\n  {}",
        v.len(),
        shown.join("\n  ")
    );
}

#[test]
fn every_journal_record_follows_the_fsyncs_it_relies_on_one_filesystem() {
    trace_and_check("durable-same-fs", false, false);
}

#[test]
fn every_journal_record_follows_the_fsyncs_it_relies_on_across_filesystems() {
    trace_and_check("durable-cross-fs", true, false);
}

#[test]
fn undo_records_follow_the_fsyncs_they_rely_on_one_filesystem() {
    trace_and_check("durable-undo-same-fs", false, true);
}

#[test]
fn undo_records_follow_the_fsyncs_they_rely_on_across_filesystems() {
    trace_and_check("durable-undo-cross-fs", true, true);
}

/// The checker itself must be able to fail: a trace where a directory is created and a journal
/// record follows without an fsync of its parent, and one where the parent is fsynced.
#[test]
fn the_checker_catches_a_missing_fsync_and_accepts_a_present_one() {
    let t = |body: &str| parse_trace(body);
    let roots = vec![b"/w".to_vec()];
    let hx = |s: &str| s.bytes().map(|b| format!("\\x{b:02x}")).collect::<String>();
    let lines = |fsync: bool| {
        let mut v = vec![format!("1 mkdir(\"{}\", 0755) = 0", hx("/w/shared"))];
        if fsync {
            v.push(format!("1 fsync(3<{}>) = 0", hx("/w")));
        }
        v.push(format!(
            "1 openat(AT_FDCWD<{}>, \"{}\", O_WRONLY|O_CREAT|O_EXCL|O_CLOEXEC, 0600) = 3<{}>",
            hx("/"),
            hx("/w/s/.journal.json.dci-tmp-1"),
            hx("/w/s/.journal.json.dci-tmp-1")
        ));
        v.push(format!(
            "1 fsync(3<{}>) = 0",
            hx("/w/s/.journal.json.dci-tmp-1")
        ));
        v.push(format!(
            "1 rename(\"{}\", \"{}\") = 0",
            hx("/w/s/.journal.json.dci-tmp-1"),
            hx("/w/s/journal.json")
        ));
        v.push(format!("1 fsync(3<{}>) = 0", hx("/w/s")));
        v.join("\n")
    };
    let bad = check(&t(&lines(false)), &roots);
    assert_eq!(bad.len(), 1, "{bad:#?}");
    assert!(bad[0].contains("mkdir /w/shared"), "{bad:#?}");
    assert!(bad[0].contains("/w was not fsynced"), "{bad:#?}");
    let good = check(&t(&lines(true)), &roots);
    assert!(good.is_empty(), "{good:#?}");
}
