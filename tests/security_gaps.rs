//! The root-safety gaps issue 10 left open (docs/security.md): directories the migration
//! created and removes again, the lock probe of `verify`, the parent fsyncs, and the staging
//! names of the journal's directories, which the home's owner can plant.
//!
//! As in `tests/security.rs`: the real binary runs as root for a home owned by a real
//! unprivileged user U (`setpriv`), with root-owned canaries next to the world; races are made
//! deterministic with `pause` failpoints; after the run, what lies outside U's reach must be
//! exactly as it was (full manifests). Needs root and the `failpoints` feature.

mod common;

use common::attacker::*;
use common::crash::{crash_tests_can_run, trace_run, Arg, Call};
use common::*;
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A world whose home belongs to U, the canaries `$R`, and a root-owned tree `$R2`: an empty
/// `claude-shared` (what a link swapped in on the way would point the removal of the shared dir
/// at), `v/config` (a config dir's parent a probe could be pointed at) and
/// `creds/.credentials.json` (root's, 0600, holding `$R`'s token).
struct Box {
    w: World,
    u: User,
    r: Canaries,
    r2: PathBuf,
    r2_before: Manifest,
}

/// `deep`: the shared dir is `<root>/var/lib/disinto/x/y/claude-shared`, so the tool creates
/// `x`, `x/y` and `claude-shared` and gives them to U (only `disinto` above them is root's): U
/// can then swap `y`, or `claude-shared`, for a link.
fn setup(deep: bool) -> Option<Box> {
    setup_in(World::new(), deep)
}

/// [`setup`] with `deep`, one filesystem or (`cross`) the home and the shared dir on two. None
/// where there is no user or no second filesystem (recorded as a skip: a failure under `CI=true`).
fn setup_deep(cross: bool) -> Option<Box> {
    let w = if cross {
        World::cross_device()?
    } else {
        World::new()
    };
    setup_in(w, true)
}

/// [`setup`] in the world `w`; `deep` puts the shared dir at `<its parent>/x/y/claude-shared`
/// (`var/lib/disinto/x/y/claude-shared` in a [`World::new`]).
fn setup_in(mut w: World, deep: bool) -> Option<Box> {
    let (u, _v) = users()?;
    if deep {
        let parent = w.shared.parent().unwrap().to_path_buf();
        w.shared = parent.join("x/y/claude-shared");
        w.config = w.shared.join("config");
    }
    build_realistic_home(&w.home);
    write_bashrc(&w.profile);
    u.give(&w.home);
    let r = Canaries::plant(&w.root);
    let r2 = w.root.join("R2");
    for d in ["claude-shared", "v/config"] {
        mkdir(&r2.join(d), 0o755);
    }
    write_file(
        &r2.join("creds/.credentials.json"),
        format!("{{\"token\":\"{}\"}}\n", r.token).as_bytes(),
        0o600,
    );
    let mut n = 0;
    stamp_tree(&r2, &mut n);
    let r2_before = manifest(&r2);
    Some(Box {
        w,
        u,
        r,
        r2,
        r2_before,
    })
}

impl Box {
    /// Nothing outside U's reach changed: `$R` and `$R2` exactly as planted, `$R`'s token
    /// unreadable by U.
    #[track_caller]
    fn check(&self) {
        self.r.assert_intact();
        assert_same(
            &self.r2_before,
            &manifest(&self.r2),
            &format!("the root-owned tree {}", self.r2.display()),
        );
        let roots: Vec<&Path> = self.w.roots.iter().map(|(_, p)| p.as_path()).collect();
        assert_token_unreadable(&self.u, &roots, &self.r);
    }

    fn sub(&self, sub: &str) -> Command {
        let mut c = self.w.cmd_sub(sub);
        c.args(["--yes", "--no-env-file"]);
        c
    }

    fn migrated(&self) {
        let r = run(&mut self.sub("migrate"));
        ok(&r, "migrate as root");
    }
}

// ---------------------------------------------------------------------------------------------
// 1. The directories the migration created are removed through descriptors
// ---------------------------------------------------------------------------------------------

/// U owns `x` (the tool made it for them), so right before `create-shared-dir` is undone U can
/// swap `x/y` for a link to `$R2`, where an empty root-owned `claude-shared` waits. Removing
/// `x/y/claude-shared` by its path removed `$R2/claude-shared` (root's); reached from
/// `disinto` (root's) without following a link, the removal stops at the link.
#[test]
fn undo_of_the_created_dirs_does_not_follow_a_parent_swapped_for_a_link() {
    let Some(b) = setup(true) else { return };
    b.migrated();
    let point = "undo-create-shared-dir";
    let mut p = spawn_paused(&mut b.sub("undo"), &[point]);
    p.must_reach(point);
    b.u.must(&format!(
        "mv {y} {y}.orig && ln -s {r2} {y}",
        y = q(&b.w.root.join("var/lib/disinto/x/y")),
        r2 = q(&b.r2),
    ));
    let r = p.finish(&[point]);
    ended(&r);
    assert_ne!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    b.check();
    assert!(
        r.stderr
            .contains("cannot remove the directory the migration created"),
        "exit {}\n{}",
        r.code,
        r.stderr
    );
}

/// U owns `x/y` (the tool made it for them). Paused right before `~/.claude` and the config
/// dir's name are exchanged (one filesystem), or right before the verified copy into the config
/// dir's staging name (across filesystems), U swaps `x/y` for a link to a root-owned tree whose
/// `claude-shared/config` holds root's secret. By their full paths, the exchange followed the
/// link (root's directory became U's `~/.claude` and U's config landed in root's tree), and so
/// did the copy (U's config copied into root's tree). Relative to a directory walked down from
/// the shared dir's root-owned parent without following a link, both stop at the link.
#[test]
fn the_switch_and_the_copy_do_not_follow_a_shared_parent_swapped_for_a_link() {
    for (cross, point) in [(false, "linked-move-config"), (true, "apply-move-config")] {
        let Some(b) = setup_deep(cross) else { return };
        let r3 = b.w.root.join("R3");
        write_file(
            &r3.join("claude-shared/config/.credentials.json"),
            format!("{{\"token\":\"{}\"}}\n", b.r.token).as_bytes(),
            0o600,
        );
        std::fs::set_permissions(
            r3.join("claude-shared/config"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let r3_before = manifest(&r3);
        let mut p = spawn_paused(&mut b.sub("migrate"), &[point]);
        p.must_reach(point);
        let y = b.w.shared.parent().unwrap().to_path_buf();
        b.u.must(&format!(
            "mv {y} {y}.orig && ln -s {r3} {y}",
            y = q(&y),
            r3 = q(&r3)
        ));
        let r = p.finish(&[point]);
        ended(&r);
        let what = format!("paused at {point}");
        assert_ne!(
            r.code, 0,
            "{what}: stdout:\n{}\nstderr:\n{}",
            r.stdout, r.stderr
        );
        assert_same(
            &r3_before,
            &manifest(&r3),
            &format!("{what}: the root-owned tree R3"),
        );
        assert!(
            std::fs::symlink_metadata(b.w.home.join(".claude"))
                .is_ok_and(|m| m.is_dir() && std::os::unix::fs::MetadataExt::uid(&m) == b.u.uid),
            "{what}: ~/.claude is no longer U's own directory"
        );
        b.check();
    }
}

/// Without an attack, the directories the tool created above the config dir (`x`, whose
/// parent is root's, then `y` and `claude-shared`, below U's `x`) are all removed by the undo
/// through descriptors walked from `disinto`: the walk that refuses a link still reaches them.
#[test]
fn undo_of_the_created_shared_dirs_removes_them_and_nothing_of_root_s() {
    let Some(b) = setup(true) else { return };
    b.migrated();
    let r = run(&mut b.sub("undo"));
    ok(&r, "undo as root");
    let x = b.w.root.join("var/lib/disinto/x");
    assert!(
        !x.exists(),
        "undo left the directory it created: {}",
        x.display()
    );
    b.check();
}

/// `secure-credentials` fixes `<config>/.credentials.json` (here root's and 0644: it is
/// planned, with a chown). Paused
/// right before it, U (who owns the shared dir, and the config dir by then) swaps the config
/// dir for a link to `$R2/creds`, which holds root's `.credentials.json`: opened by its path,
/// root's file was chowned to U, who read root's token before the rollback gave it back. Reached
/// from the shared dir's root-owned parent without following a link, the step fails on the
/// link.
#[test]
fn secure_credentials_does_not_follow_a_config_dir_swapped_for_a_link() {
    let Some(b) = setup(false) else { return };
    // Root's (a `sudo claude` leftover) and 0644: the step will narrow it and give it to U.
    let creds = b.w.home.join(".claude/.credentials.json");
    std::os::unix::fs::chown(&creds, Some(0), Some(0)).unwrap();
    set_mode(&creds, 0o644);
    let point = "apply-secure-credentials";
    let after = "applied-secure-credentials";
    let mut p = spawn_paused(&mut b.sub("migrate"), &[point, after]);
    assert!(p.reached(point), "migrate never reached {point}");
    b.u.must(&format!(
        "mv {config} {config}.orig && ln -s {creds} {config}",
        config = q(&b.w.config),
        creds = q(&b.r2.join("creds")),
    ));
    p.release(point);
    if p.reached(after) {
        // The step went through the link: U takes what it can read now (a rollback may give
        // the file back to root afterwards; the copy stays U's).
        b.u.must(&format!(
            "cat {}/.credentials.json > {} 2>/dev/null || true",
            q(&b.w.config),
            q(&b.w.home.join("loot"))
        ));
    }
    let r = p.finish(&[after]);
    ended(&r);
    assert_ne!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    b.check();
}

// ---------------------------------------------------------------------------------------------
// 1b. verify's lock probe
// ---------------------------------------------------------------------------------------------

/// `verify` makes and removes `<config>.dci-probe-<pid>` next to the config dir, in the shared
/// dir U owns. Paused right before the probe, U swaps the shared dir for a link to `$R2`: a
/// probe by path made and removed a directory in `$R2` (root's) and left its mtime changed.
/// Through the parent's descriptor, reached without following a link, `$R2` is untouched and
/// the failure is reported as a problem.
#[test]
fn verify_probe_does_not_follow_a_shared_dir_swapped_for_a_link() {
    let Some(b) = setup(true) else { return };
    b.migrated();
    let point = "verify-probe";
    let mut c = b.w.cmd_sub("verify");
    c.arg("--no-env-file");
    let mut p = spawn_paused(&mut c, &[point]);
    assert!(p.reached(point), "verify never reached {point}");
    b.u.must(&format!(
        "mv {shared} {shared}.orig && ln -s {r2} {shared}",
        shared = q(&b.w.shared),
        r2 = q(&b.r2.join("v")),
    ));
    let r = p.finish(&[point]);
    b.check();
    assert!(
        r.stderr.contains("mkdir next to the config dir"),
        "the probe through a link was not reported\nexit {}\nstdout:\n{}\nstderr:\n{}",
        r.code,
        r.stdout,
        r.stderr
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Staging names are input
// ---------------------------------------------------------------------------------------------

/// A pid no process can have (above `pid_max`): the staging dir of a run that is gone.
fn dead_pid() -> u64 {
    let max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4_194_304);
    max + 1
}

/// U renames their `~/.claude`, which holds a root-owned directory with root's files in it (a
/// leftover of `sudo claude`; U can neither write it nor delete what it holds), to the staging
/// name of the missing `~/.local`. Root's `undo` (no journal: it only cleans up) used to remove
/// the whole tree, root's files included. Now it removes only what U could: their own
/// directories' entries, and no directory of someone else's that is not empty.
#[test]
fn a_planted_staging_dir_removes_nothing_u_could_not_remove() {
    let Some(b) = setup(false) else { return };
    let claude = b.w.home.join(".claude");
    let root_dir = claude.join("root-owned");
    write_file(&root_dir.join("f"), b"root's\n", 0o644);
    mkdir(&root_dir.join("sub"), 0o755);
    write_file(&root_dir.join("sub/g"), b"root's too\n", 0o600);
    set_mode(&root_dir, 0o755);
    let mut n = 0;
    stamp_tree(&root_dir, &mut n);
    let before = manifest(&root_dir);
    let staged = b.w.home.join(format!("..local.dci-state-{}", dead_pid()));
    b.u.must(&format!("mv {} {}", q(&claude), q(&staged)));
    let r = run(&mut b.sub("undo"));
    ended(&r);
    assert_same(
        &before,
        &manifest(&staged.join("root-owned")),
        "the root-owned directory U renamed into a staging name",
    );
    b.check();
}

/// `~/.local` is root's but writable by all (not sticky): U can create names in it, and
/// rename root's entries there, but cannot set its mtime to a time of their choice, nor empty
/// root's directory `keep`. U renames `keep` to a staging name whose suffix is the mtime
/// `@0.0`, and plants a second staging directory of their own with the same suffix. Root's
/// `undo` (no journal) used to delete `keep`'s files and set `~/.local`'s mtime to the epoch.
#[test]
fn a_planted_staging_name_sets_no_time_on_a_directory_u_does_not_own() {
    let Some(b) = setup(false) else { return };
    let local = b.w.home.join(".local");
    let keep = local.join("keep");
    write_file(&keep.join("f"), b"root's\n", 0o644);
    set_mode(&keep, 0o755);
    std::os::unix::fs::chown(&local, Some(0), Some(0)).unwrap();
    set_mode(&local, 0o777);
    let mut n = 0;
    stamp_tree(&keep, &mut n);
    let before = manifest(&keep);
    let pid = dead_pid();
    let renamed = local.join(format!(".state.dci-state-{pid}@0.0"));
    let planted = local.join(format!(".state.dci-state-{}@0.0", pid + 1));
    b.u.must(&format!(
        "mv {} {} && mkdir {}",
        q(&keep),
        q(&renamed),
        q(&planted)
    ));
    let r = run(&mut b.sub("undo"));
    ended(&r);
    assert_same(
        &before,
        &manifest(&renamed),
        "root's directory U renamed to a staging name",
    );
    assert!(
        !planted.exists(),
        "U's own planted staging dir is U's to remove, and should go: {}",
        planted.display()
    );
    assert_ne!(
        mtime_of(&local),
        (0, 0),
        "root set the mtime U named on {} (root's)",
        local.display()
    );
    assert_eq!(mode_of(&local), 0o777);
    b.check();
}

// ---------------------------------------------------------------------------------------------
// 1, 2. No removal and no fsync reaches a directory by a path through one U controls
// ---------------------------------------------------------------------------------------------

/// `p` lies strictly below one of `roots` (a directory U controls): resolving `p` by its path
/// reads a directory U can change, and so follows whatever link U put there.
fn through(p: &[u8], roots: &[Vec<u8>]) -> bool {
    roots
        .iter()
        .any(|r| p.len() > r.len() && p.starts_with(r) && p[r.len()] == b'/')
}

/// The path arguments of a call that changes something, each with the slot of the directory
/// descriptor it is relative to (`None`: a plain path argument).
fn changed_paths(name: &str) -> &'static [(usize, Option<usize>)] {
    match name {
        "open" | "creat" | "mkdir" | "rmdir" | "unlink" | "chmod" | "chown" | "lchown"
        | "truncate" | "utimes" | "setxattr" | "lsetxattr" | "removexattr" | "lremovexattr" => {
            &[(0, None)]
        }
        "rename" | "link" => &[(0, None), (1, None)],
        "symlink" => &[(1, None)],
        "symlinkat" => &[(2, Some(1))],
        "openat" | "mkdirat" | "unlinkat" | "fchmodat" | "fchownat" | "utimensat" | "futimesat" => {
            &[(1, Some(0))]
        }
        "renameat" | "renameat2" | "linkat" => &[(1, Some(0)), (3, Some(2))],
        _ => &[],
    }
}

/// The calls of `calls` that change a file or directory by an absolute path through one of
/// `roots` (create, rename, link, remove, chmod, chown, set times or xattrs: the kernel resolves
/// every component again, so a directory U swapped for a link on the way sends the change
/// elsewhere), and those that fsync a directory opened by such a path.
fn path_resolved_changes(calls: &[Call], roots: &[Vec<u8>]) -> Vec<String> {
    const AT_FDCWD: i64 = -100;
    let mut by_path: HashMap<i64, Vec<u8>> = HashMap::new();
    let mut out = Vec::new();
    for c in calls {
        let args = if c.literal.is_empty() {
            &c.args
        } else {
            &c.literal
        };
        let abs = |i: usize| match args.get(i) {
            Some(Arg::Str(s)) if s.starts_with(b"/") => Some(s.clone()),
            _ => None,
        };
        let from_cwd = |d: Option<usize>| match d {
            None => true,
            Some(d) => matches!(args.get(d), Some(Arg::Fd(n, _)) if *n == AT_FDCWD),
        };
        let resolved = |i: usize, d: Option<usize>| abs(i).filter(|_| from_cwd(d));
        if c.is_mutating() {
            for &(i, d) in changed_paths(&c.name) {
                if let Some(p) = resolved(i, d).filter(|p| through(p, roots)) {
                    out.push(format!("{} {}", c.name, String::from_utf8_lossy(&p)));
                }
            }
        }
        match c.name.as_str() {
            "open" | "openat" => {
                let p = if c.name == "open" {
                    resolved(0, None)
                } else {
                    resolved(1, Some(0))
                };
                let fd = c
                    .ret
                    .as_deref()
                    .and_then(|r| r.split('<').next())
                    .and_then(|n| n.trim().parse::<i64>().ok());
                if let Some(fd) = fd {
                    match p {
                        Some(p) => by_path.insert(fd, p),
                        None => by_path.remove(&fd),
                    };
                }
            }
            "fsync" | "fdatasync" => {
                if let Some(Arg::Fd(n, _)) = args.first() {
                    if let Some(p) = by_path.get(n).filter(|p| through(p, roots)) {
                        out.push(format!(
                            "{}({n}) of {}, opened by that path",
                            c.name,
                            String::from_utf8_lossy(p)
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// A migration and its undo under strace, of a realistic home and of one with an empty
/// `~/.claude` and Docker's empty `~/.claude.json` directory: every change (the moves of
/// `~/.claude` and `~/.claude.json`, the exchange, the links, a killed run's temporary link,
/// every directory removed: `~/.claude` made way for the link, the shared dirs and config dir it
/// created, Docker's directory) and
/// every directory fsynced after a change in it is reached through a descriptor, never by a path
/// through the home or the shared dirs U owns.
#[test]
fn changes_and_parent_fsyncs_never_resolve_a_path_through_u_s_directories() {
    if !crash_tests_can_run() {
        return;
    }
    let mut seen = Vec::new();
    for (empty, cross) in [(false, false), (true, false), (false, true)] {
        let Some(b) = setup_deep(cross) else { return };
        if empty {
            // remove-empty-claude-dir and remove-empty-claude-json-dir, the config dir new.
            let claude = b.w.home.join(".claude");
            std::fs::remove_dir_all(&claude).unwrap();
            let _ = std::fs::remove_file(b.w.home.join(".claude.json"));
            for d in [&claude, &b.w.home.join(".claude.json")] {
                mkdir(d, 0o755);
                std::os::unix::fs::chown(d, Some(b.u.uid), Some(b.u.gid)).unwrap();
            }
        }
        // The temporary link of a killed run, which the link step clears away first.
        let stale = b.w.home.join(format!("..claude.symlink-{}-0", dead_pid()));
        std::os::unix::fs::symlink("/nowhere", &stale).unwrap();
        std::os::unix::fs::lchown(&stale, Some(b.u.uid), Some(b.u.gid)).unwrap();
        let world = match (empty, cross) {
            (true, _) => "empty ~/.claude",
            (_, true) => "realistic, across filesystems",
            _ => "realistic",
        };
        seen.extend(traced_path_changes(&b, world));
        b.check();
    }
    assert!(seen.is_empty(), "{}", seen.join("\n"));
}

/// Migrate and undo `b`'s world under strace; what [`path_resolved_changes`] finds in each.
fn traced_path_changes(b: &Box, world: &str) -> Vec<String> {
    let roots: Vec<Vec<u8>> = [
        &b.w.home,
        &b.w.shared.parent().unwrap().parent().unwrap().to_path_buf(),
    ]
    .iter()
    .map(|p| p.as_os_str().as_bytes().to_vec())
    .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    for (what, args) in [
        ("migrate", &["migrate", "--yes", "--no-env-file"][..]),
        ("undo", &["undo", "--yes", "--no-env-file"][..]),
    ] {
        let out = dir.path().join(what);
        let (o, calls) = trace_run(&b.w, args, &out);
        assert!(o.ok(), "{world}, {what}: {}", o.brief());
        let named = |n: &str| calls.iter().filter(|c| c.name == n).count();
        eprintln!(
            "{world}, {what}: {} traced calls, {} unlinkat, {} renameat2, {} symlinkat",
            calls.len(),
            named("unlinkat"),
            named("renameat2"),
            named("symlinkat")
        );
        seen.extend(
            path_resolved_changes(&calls, &roots)
                .into_iter()
                .map(|v| format!("{world}, {what}: {v}")),
        );
    }
    seen
}

/// The checker sees a path removal, rename, link and fsync, and passes descriptor-relative
/// ones.
#[test]
fn the_path_checker_catches_what_it_looks_for() {
    let line = |s: &str| common::crash::parse_trace(s);
    let roots = vec![b"/w/home".to_vec()];
    let hx = |s: &str| s.bytes().map(|b| format!("\\x{b:02x}")).collect::<String>();
    let bad = line(&format!(
        "1 rmdir(\"{a}\") = 0\n1 openat(AT_FDCWD<{r}>, \"{b}\", O_RDONLY|O_CLOEXEC) = 7<{b}>\n1 fsync(7<{b}>) = 0\n\
         1 renameat2(AT_FDCWD<{r}>, \"{a}\", AT_FDCWD<{r}>, \"{s}\", RENAME_EXCHANGE) = 0\n\
         1 symlinkat(\"{s}\", AT_FDCWD<{r}>, \"{a}\") = 0\n1 utimensat(AT_FDCWD<{r}>, \"{a}\", [UTIME_OMIT, {{tv_sec=1, tv_nsec=0}}], AT_SYMLINK_NOFOLLOW) = 0\n",
        a = hx("/w/home/.claude"),
        b = hx("/w/home/.local"),
        s = hx("/w/shared/config"),
        r = hx("/"),
    ));
    let found = path_resolved_changes(&bad, &roots);
    assert_eq!(found.len(), 5, "{found:?} in {bad:?}");
    let good = line(&format!(
        "1 openat(AT_FDCWD<{r}>, \"{h}\", O_RDONLY|O_DIRECTORY|O_CLOEXEC) = 6<{h}>\n1 unlinkat(6<{h}>, \"{n}\", AT_REMOVEDIR) = 0\n1 fsync(6<{h}>) = 0\n\
         1 renameat2(6<{h}>, \"{n}\", AT_FDCWD<{r}>, \"{s}\", RENAME_EXCHANGE) = 0\n",
        h = hx("/w/home"),
        n = hx(".claude"),
        s = hx("/w/shared/config"),
        r = hx("/"),
    ));
    assert!(path_resolved_changes(&good, &roots).is_empty(), "{good:?}");
}
