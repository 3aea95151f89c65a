//! `--wait` (issue 13) with real processes: agents run the way the factory's wrapper runs them
//! (`flock -w 600 9` on `~/.claude/session.lock`), refresh locks on disk, and containers stood
//! in for by a long-running process in its own mount namespace with `~/.claude` bind-mounted.

mod common;

use common::wait::*;
use common::*;
use disinto_claude_init::mounts;
use disinto_claude_init::waiter::{self, Busy, Targets, WaitError};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

fn targets(w: &World) -> Targets {
    Targets::new(&w.home, &w.config)
}

/// `wait_for_agents` in a thread; its progress reports come back on a channel.
fn wait_in_thread(
    t: Targets,
    limit: Duration,
) -> (
    mpsc::Receiver<Busy>,
    std::thread::JoinHandle<Result<waiter::SessionGuard, WaitError>>,
) {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        waiter::wait_for_agents(&t, limit, &mut |b| {
            let _ = tx.send(b.clone());
        })
    });
    (rx, h)
}

#[track_caller]
fn next_report(rx: &mpsc::Receiver<Busy>) -> Busy {
    rx.recv_timeout(EVENT_BOUND)
        .expect("a progress report while waiting")
}

// ---------------------------------------------------------------------------------------------
// session.lock
// ---------------------------------------------------------------------------------------------

/// An agent holds the lock: the waiter reports it by pid, gets the lock the moment the agent
/// is done, and holds it: an agent started afterwards queues behind the guard on the same
/// inode, and runs only once the guard is dropped.
#[test]
fn waits_for_the_holder_then_holds_the_lock() {
    let w = World::realistic();
    let lock = w.claude().join("session.lock");
    let mut first = Agent::holding(&w.home);
    let holder = first.saw().unwrap().pid;
    let (rx, h) = wait_in_thread(targets(&w), Duration::from_secs(600));
    let report = next_report(&rx);
    match &report {
        Busy::SessionLock { holders, path, .. } => {
            assert_eq!(path, &lock);
            assert!(
                holders.iter().any(|p| p.pid == holder),
                "names the wrapper's subshell, pid {holder}: {report:?}"
            );
        }
        other => panic!("expected the session lock, got {other:?}"),
    }
    let line = format!("waiting for {report}…");
    assert!(
        line.starts_with(&format!(
            "waiting for the agent holding session.lock (pid {holder} "
        )),
        "{line}"
    );
    assert!(
        !h.is_finished(),
        "must not return while the agent holds the lock"
    );
    assert_eq!(first.finish(), 0, "the agent ran to its end");
    let guard = h.join().unwrap().expect("the lock, once the agent is done");
    assert_eq!(guard.inode(), inode(&lock));
    assert!(!guard.created(), "session.lock existed");
    assert!(is_flocked(&lock), "the guard holds it");

    // A second agent starts while the guard is held: it blocks in flock(2) on that inode.
    let mut second = Agent::start(&w.home);
    let (dev, ino) = inode(&lock);
    let waiter_pid = wait_until("the second agent to block on session.lock", || {
        blocked_on(dev, ino).into_iter().next()
    });
    assert!(
        second.saw().is_none(),
        "it must not run while the guard is held"
    );
    // The waiter's own view: one process queued behind the lock (the agent's shell; flock(1),
    // pid {waiter_pid}, shares its open file).
    let (holders, queued) = waiter::flock_holders(dev, ino);
    assert!(
        holders.is_empty(),
        "only this process holds it: {holders:?}"
    );
    assert!(
        queued >= 1,
        "the queued agent is counted (flock pid {waiter_pid})"
    );
    let (held, removed) = guard.release();
    assert!(held > Duration::ZERO);
    assert!(!removed, "the file existed: it is never removed");
    let saw = second.wait_locked();
    assert_eq!(saw.lock, (dev, ino), "the same inode");
    assert_eq!(second.finish(), 0);
}

/// `--wait 1` against an agent that keeps the lock: a timeout naming its pid, exit 3 with the
/// fix, and the world unchanged (the lock file included).
#[test]
fn times_out_naming_the_holder_and_changes_nothing() {
    let w = World::realistic();
    let agent = Agent::holding(&w.home);
    let pid = agent.saw().unwrap().pid;
    let before = w.manifest();
    let mut reports = Vec::new();
    let res = waiter::wait_for_agents(&targets(&w), Duration::from_secs(1), &mut |b| {
        reports.push(b.clone())
    });
    let err = match res {
        Err(e) => e,
        Ok(_) => panic!("the agent still holds the lock: must time out"),
    };
    assert_same(&before, &w.manifest(), "a timed-out wait");
    assert!(!reports.is_empty(), "progress was reported while waiting");
    match &err {
        WaitError::Timeout { waited, busy } => {
            assert!(*waited >= Duration::from_secs(1), "{waited:?}");
            assert!(
                matches!(&busy[..], [Busy::SessionLock { holders, .. }] if holders.iter().any(|p| p.pid == pid)),
                "{busy:?}"
            );
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    let e = err.to_error("disinto-claude-init --yes --wait 1800");
    assert_eq!(e.exit.code(), 3);
    assert_eq!(e.kind.as_str(), "wait-timeout");
    assert!(e.message.contains(&format!("pid {pid} (")), "{}", e.message);
    assert!(e.message.contains("session.lock"), "{}", e.message);
    assert!(e.fix.as_deref().unwrap().contains("--wait 1800"), "{e}");
    // Its lock was never taken from it.
    assert!(is_flocked(&w.claude().join("session.lock")));
    drop(agent);
}

/// A kill of the waiting agent (or of anything holding the lock) frees it: the kernel drops a
/// `flock` with its holder.
#[test]
fn a_killed_holder_frees_the_lock() {
    let w = World::realistic();
    let agent = Agent::holding(&w.home);
    let (rx, h) = wait_in_thread(targets(&w), Duration::from_secs(600));
    next_report(&rx);
    drop(agent); // SIGKILL to its process group
    let guard = h.join().unwrap().expect("the lock, once the holder died");
    assert_eq!(guard.inode(), inode(&w.claude().join("session.lock")));
}

/// No session.lock yet (no wrapped agent ever ran): it is created, empty, 0600, owned like
/// `~/.claude`, so that agents starting during the migration queue on it; released with
/// nobody queued, it goes again and `~/.claude` is exactly as it was, times included. An agent
/// that queued on it keeps it (the wrapper's now).
#[test]
fn creates_the_lock_file_when_absent_and_removes_it_again() {
    let w = World::realistic();
    let lock = w.claude().join("session.lock");
    fs::remove_file(&lock).unwrap();
    if is_root() {
        std::os::unix::fs::chown(w.claude(), Some(4242), Some(4343)).unwrap();
    }
    let before = w.manifest();
    let guard = waiter::wait_for_agents(&targets(&w), Duration::from_secs(5), &mut |b| {
        panic!("nothing to wait for, yet: {b}")
    })
    .expect("the lock");
    assert!(guard.created());
    let m = fs::symlink_metadata(&lock).unwrap();
    assert!(m.is_file() && m.len() == 0);
    assert_eq!(m.mode() & 0o7777, 0o600);
    let d = fs::metadata(w.claude()).unwrap();
    assert_eq!((m.uid(), m.gid()), (d.uid(), d.gid()));
    assert_eq!(guard.inode(), inode(&lock));
    assert!(is_flocked(&lock));
    let (_, removed) = guard.release();
    assert!(removed);
    assert_same(&before, &w.manifest(), "created and removed again");

    // Now with an agent queued on the created file when the guard goes.
    let guard = waiter::wait_for_agents(&targets(&w), Duration::from_secs(5), &mut |_| {})
        .expect("the lock");
    assert!(guard.created());
    let (dev, ino) = inode(&lock);
    let mut agent = Agent::start(&w.home);
    wait_until("the agent to queue", || {
        blocked_on(dev, ino).into_iter().next()
    });
    let (_, removed) = guard.release();
    assert!(!removed, "an agent has it open: it stays");
    assert_eq!(agent.wait_locked().lock, (dev, ino));
    assert_eq!(agent.finish(), 0);
    assert_eq!(inode(&lock), (dev, ino));
}

/// `session.lock` replaced while the waiter was blocked on the old inode: it takes the lock on
/// the file the wrapper now opens.
#[test]
fn a_replaced_lock_file_is_locked_again() {
    let w = World::realistic();
    let lock = w.claude().join("session.lock");
    let mut agent = Agent::holding(&w.home);
    let old = inode(&lock);
    let (rx, h) = wait_in_thread(targets(&w), Duration::from_secs(600));
    next_report(&rx);
    fs::rename(&lock, w.claude().join("session.lock.old")).unwrap();
    write_file(&lock, b"", 0o644);
    let new = inode(&lock);
    assert_ne!(old, new);
    agent.finish();
    let guard = h.join().unwrap().expect("the lock");
    assert_eq!(guard.inode(), new, "the file that session.lock names now");
}

/// A symlink or a FIFO named session.lock is refused, never followed or opened for blocking.
#[test]
fn a_lock_file_that_is_not_a_file_is_refused() {
    let w = World::realistic();
    let lock = w.claude().join("session.lock");
    let target = w.root.join("elsewhere");
    write_file(&target, b"not yours\n", 0o644);
    fs::remove_file(&lock).unwrap();
    ln_s(&target, &lock);
    let before = w.manifest();
    let err = not_a_lock_file(&w, "a symlink");
    assert_eq!(err.to_error("x").exit.code(), 3);
    assert_same(&before, &w.manifest(), "refused symlink");
    assert!(!is_flocked(&target));

    fs::remove_file(&lock).unwrap();
    nix::unistd::mkfifo(&lock, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    not_a_lock_file(&w, "a FIFO");
}

/// The wait refuses session.lock at once as `found`, not a lock file.
#[track_caller]
fn not_a_lock_file(w: &World, found: &str) -> WaitError {
    let err =
        waiter::wait_for_agents(&targets(w), Duration::from_secs(5), &mut |_| {}).expect_err(found);
    assert!(
        matches!(&err, WaitError::NotALockFile { found: f, .. } if *f == found),
        "{err:?}"
    );
    err
}

/// Who counts as "using ~/.claude without the lock": not a wrapped agent (its shell, the
/// `claude` it runs with its cwd and files in ~/.claude, what that starts), while it holds or
/// waits for the lock; but a process of its own with its cwd there, always; and, once the lock
/// is ours, anything still working in ~/.claude besides the lock file.
#[test]
fn wrapped_agents_are_told_apart_from_unwrapped_users() {
    let w = World::realistic();
    let lock = w.claude().join("session.lock");
    let agent = Agent::start_with(
        &w.home,
        r#"cd "$HOME/.claude/projects"; exec 3<"$HOME/.claude/settings.json"; sleep 3600 & echo $! > "$AGENT_MARK.child""#,
    );
    let saw = agent.wait_locked();
    let child: u32 = fs::read_to_string(format!("{}.child", agent.mark.display()))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let queued = Agent::start(&w.home);
    let (dev, ino) = inode(&lock);
    wait_until("the second agent to queue", || {
        blocked_on(dev, ino).into_iter().next()
    });
    let mut loose = std::process::Command::new("sleep")
        .arg("3600")
        .current_dir(w.claude().join("todos"))
        .spawn()
        .unwrap();
    let loose_pid = loose.id();
    let pids = |v: Vec<waiter::Proc>| v.into_iter().map(|p| p.pid).collect::<Vec<_>>();
    let before_lock = pids(waiter::unwrapped_users(&w.claude(), Some((dev, ino)), true));
    let strict = pids(waiter::unwrapped_users(
        &w.claude(),
        Some((dev, ino)),
        false,
    ));
    let _ = loose.kill();
    let _ = loose.wait();
    assert_eq!(before_lock, vec![loose_pid], "only the unwrapped process");
    assert!(strict.contains(&loose_pid), "{strict:?}");
    assert!(
        strict.contains(&saw.pid),
        "the agent's shell works in ~/.claude: {strict:?}"
    );
    assert!(strict.contains(&child), "and so does its child: {strict:?}");
    assert!(
        !strict.contains(&queued.child.id()),
        "a queued agent only has the lock file open: {strict:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Refresh locks
// ---------------------------------------------------------------------------------------------

/// A fresh `~/.claude.lock`: reported, waited for, and once it is removed the lock is taken.
/// A stale one (10 minutes old) is not waited for.
#[test]
fn waits_for_a_fresh_refresh_lock_not_a_stale_one() {
    let w = World::realistic();
    let refresh = w.home.join(".claude.lock");
    mkdir(&refresh, 0o755);
    let (rx, h) = wait_in_thread(targets(&w), Duration::from_secs(600));
    match next_report(&rx) {
        Busy::RefreshLock { path, .. } => assert_eq!(path, refresh),
        other => panic!("expected the refresh lock, got {other:?}"),
    }
    assert!(!h.is_finished());
    fs::remove_dir(&refresh).unwrap();
    let guard = h.join().unwrap().expect("the lock");
    drop(guard);

    let stale = w.claude().join(".oauth_refresh.lock");
    mkdir(&stale, 0o755);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    set_mtime(&stale, now - 600, 0);
    waiter::wait_for_agents(&targets(&w), Duration::from_secs(5), &mut |b| {
        panic!("a stale lock is not waited for: {b}")
    })
    .expect("the lock");
}

/// A fresh `<config>.lock` that stays: a timeout naming it, and with no session.lock to begin
/// with, none left behind (`~/.claude` exactly as it was, times included).
#[test]
fn refresh_lock_timeout_leaves_nothing_behind() {
    let w = World::realistic();
    fs::remove_file(w.claude().join("session.lock")).unwrap();
    let mut c = w.config.as_os_str().to_os_string();
    c.push(".lock");
    let refresh = std::path::PathBuf::from(c);
    mkdir(&refresh, 0o755);
    let before = w.manifest();
    let err = waiter::wait_for_agents(&targets(&w), Duration::from_secs(1), &mut |_| {})
        .expect_err("the refresh lock stays");
    match &err {
        WaitError::Timeout { busy, .. } => assert!(
            matches!(&busy[..], [Busy::RefreshLock { path, .. }] if *path == refresh),
            "{busy:?}"
        ),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(err
        .to_error("x")
        .message
        .contains(&refresh.display().to_string()));
    assert_same(&before, &w.manifest(), "timed out on a refresh lock");
}

/// What `--dry-run` shows: the holder and the fresh refresh locks, without taking anything.
#[test]
fn inspect_reports_without_waiting_or_locking() {
    let w = World::realistic();
    assert_eq!(waiter::inspect(&targets(&w)).unwrap(), vec![]);
    let agent = Agent::holding(&w.home);
    let pid = agent.saw().unwrap().pid;
    mkdir(&w.home.join(".claude.lock"), 0o755);
    let before = w.manifest();
    let found = waiter::inspect(&targets(&w)).unwrap();
    assert_same(&before, &w.manifest(), "inspect");
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        matches!(&found[0], Busy::SessionLock { holders, .. } if holders.iter().any(|p| p.pid == pid)),
        "{found:?}"
    );
    assert!(matches!(&found[1], Busy::RefreshLock { .. }), "{found:?}");
    assert!(
        is_flocked(&w.claude().join("session.lock")),
        "still the agent's"
    );
    drop(agent);
}

// ---------------------------------------------------------------------------------------------
// Containers
// ---------------------------------------------------------------------------------------------

fn find_pid(scan: &mounts::Scan, pid: u32) -> Vec<&mounts::ForeignMount> {
    scan.mounts.iter().filter(|m| m.pid == pid).collect()
}

/// A container with `~/.claude` bind-mounted (at another path, under another name) is found:
/// its pid, the mount point inside it. One with `~/.claude/projects` mounted too, with the
/// subdirectory named.
#[test]
fn finds_a_container_that_mounts_claude_dir() {
    let w = World::realistic();
    let Some(ctr) = Container::start(&w.claude(), "/home/agent/.claude", "") else {
        return;
    };
    let scan = mounts::scan(&w.claude()).expect("scan");
    let found = find_pid(&scan, ctr.pid());
    assert_eq!(found.len(), 1, "{scan:#?}");
    assert_eq!(found[0].mount_point, ctr.mount_point);
    assert_eq!(found[0].subdir, Path::new(""));
    assert_eq!(found[0].comm, "sleep");
    let d = found[0].describe();
    assert!(
        d.contains(&format!("pid {}", ctr.pid())) && d.contains("~/.claude mounted at"),
        "{d}"
    );

    let Some(sub) = Container::start(&w.claude().join("projects"), "/work/projects", "") else {
        return;
    };
    let scan = mounts::scan(&w.claude()).expect("scan");
    let found = find_pid(&scan, sub.pid());
    assert_eq!(found.len(), 1, "{scan:#?}");
    assert_eq!(found[0].subdir, Path::new("projects"));
    assert_eq!(found[0].mount_point, sub.mount_point);
    assert_eq!(find_pid(&scan, ctr.pid()).len(), 1, "both are found");
}

/// Names do not match, devices and roots do: a sibling on the same filesystem
/// (`~/.claude-old`), a directory called `.claude` on another filesystem, and the home itself
/// are not `~/.claude` mounted. A process in this namespace is not a container.
#[test]
fn namesakes_and_parents_are_not_reported() {
    let w = World::realistic();
    let sibling = w.home.join(".claude-old");
    mkdir(&sibling, 0o700);
    let Some(a) = Container::start(&sibling, "/home/agent/.claude", "") else {
        return;
    };
    let Some(b) = Container::start(&w.home, "/home/agent", "") else {
        return;
    };
    // A tmpfs holding a directory at the very path ~/.claude has on its own filesystem: the
    // same mount root, another device.
    let Some(t) = mount_tmpfs("1M") else {
        return;
    };
    let fs_path = mounts::host_view(&w.claude()).unwrap().fs_path;
    let namesake = t
        .path
        .join(String::from_utf8(fs_path).unwrap().trim_start_matches('/'));
    mkdir(&namesake, 0o700);
    let Some(c) = Container::start(&namesake, "/home/agent/.claude", "") else {
        return;
    };
    // The host process with its cwd in ~/.claude, in this namespace.
    let mut host = std::process::Command::new("sleep")
        .arg("3600")
        .current_dir(w.claude())
        .spawn()
        .unwrap();
    let scan = mounts::scan(&w.claude()).expect("scan");
    let _ = host.kill();
    let _ = host.wait();
    assert!(find_pid(&scan, a.pid()).is_empty(), "sibling: {scan:#?}");
    assert!(find_pid(&scan, b.pid()).is_empty(), "the home: {scan:#?}");
    assert!(
        find_pid(&scan, host.id()).is_empty(),
        "host process: {scan:#?}"
    );
    assert!(
        find_pid(&scan, c.pid()).is_empty(),
        "namesake on a tmpfs: {scan:#?}"
    );
    // The same namespaces do show the real thing when they have it: a container mounting
    // ~/.claude is found in the same scan (the test is not blind).
    let Some(real) = Container::start(&w.claude(), "/home/agent/.claude", "") else {
        return;
    };
    let scan = mounts::scan(&w.claude()).expect("scan");
    assert_eq!(find_pid(&scan, real.pid()).len(), 1, "{scan:#?}");
    assert!(find_pid(&scan, c.pid()).is_empty(), "{scan:#?}");
}

/// A container whose cgroup path carries a docker id: the id is reported.
#[test]
fn names_the_container_id_from_its_cgroup() {
    let w = World::realistic();
    let Some(ctr) = Container::start(&w.claude(), "/home/agent/.claude", "") else {
        return;
    };
    let Some(cg) = FakeDockerCgroup::new() else {
        return;
    };
    if !cg.add(ctr.pid()) {
        return;
    }
    let scan = mounts::scan(&w.claude()).expect("scan");
    let found = find_pid(&scan, ctr.pid());
    assert_eq!(found.len(), 1, "{scan:#?}");
    assert_eq!(found[0].container.as_deref(), Some(cg.id.as_str()));
    assert!(found[0].describe().contains(&cg.id[..12]));
    drop(ctr);
}

/// The host's view of `~/.claude`: its device, and its path on that filesystem.
#[test]
fn host_view_of_claude_dir() {
    let w = World::realistic();
    let v = mounts::host_view(&w.claude()).unwrap();
    let m = fs::metadata(w.claude()).unwrap();
    assert_eq!(
        v.dev,
        (
            nix::sys::stat::major(m.dev()),
            nix::sys::stat::minor(m.dev())
        )
    );
    use std::os::unix::ffi::OsStrExt;
    assert!(
        v.fs_path.ends_with(w.claude().as_os_str().as_bytes())
            || w.claude().as_os_str().as_bytes().ends_with(&v.fs_path),
        "{:?} vs {}",
        String::from_utf8_lossy(&v.fs_path),
        w.claude().display()
    );
    // On a tmpfs mounted on a directory, the path is relative to the tmpfs's root.
    let Some(t) = mount_tmpfs("1M") else {
        return;
    };
    mkdir(&t.path.join("u/.claude"), 0o700);
    let v = mounts::host_view(&t.path.join("u/.claude")).unwrap();
    assert_eq!(v.fs_path, b"/u/.claude");
    // A symlink is refused, not followed.
    ln_s(t.path.join("u/.claude"), &t.path.join("link"));
    assert!(mounts::host_view(&t.path.join("link")).is_err());
}

// ---------------------------------------------------------------------------------------------
// Through the binary: `--wait`
// ---------------------------------------------------------------------------------------------

/// `~/.claude`'s manifest without `session.lock`: the agents' `9>` truncates it (its mtime
/// moves), which is theirs to do; it is checked by inode instead.
fn claude_manifest_without_lock(w: &World) -> Manifest {
    let mut m = manifest(&w.claude());
    m.remove(&b"session.lock"[..])
        .expect("the world has a session.lock");
    m
}

/// The config dir holds exactly the old `~/.claude` (lock file aside), `~/.claude` links to it,
/// `~/.claude.json` moved in, and `verify` passes.
#[track_caller]
fn assert_migrated(w: &World, claude_before: &Manifest, json_before: &[u8], what: &str) {
    let mut config = manifest(&w.config);
    config
        .remove(&b".claude.json"[..])
        .unwrap_or_else(|| panic!("{what}: no .claude.json in the config dir"));
    config
        .remove(&b"session.lock"[..])
        .unwrap_or_else(|| panic!("{what}: no session.lock in the config dir"));
    assert_same_except(
        claude_before,
        &config,
        Ignore {
            root: true,
            ..Default::default()
        },
        &format!("{what}: config dir vs the old ~/.claude"),
    );
    assert_eq!(config[&b"."[..]].mode, 0o700, "{what}");
    assert_eq!(
        fs::read(w.config.join(".claude.json")).unwrap(),
        json_before,
        "{what}"
    );
    assert_eq!(fs::read_link(w.claude()).unwrap(), w.config, "{what}");
    let r = run(w.cmd_sub("verify").arg("--json"));
    assert_eq!(r.code, 0, "{what}: verify: {}", r.stdout);
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not one JSON document ({e}):\n{out}"))
}

/// An agent holds session.lock: `--wait` waits (changing nothing meanwhile, saying on stderr
/// whom it waits for), and once the agent is done it migrates: exit 0.
#[test]
fn wait_waits_for_the_agent_then_migrates() {
    let w = World::realistic();
    let lock = w.claude().join("session.lock");
    let mut agent = Agent::holding(&w.home);
    let holder = agent.saw().unwrap().pid;
    let was = Before::take(&w);
    let before = w.manifest();
    let (dev, ino) = inode(&lock);
    let tool = Output::spawn(w.cmd().args(["--yes", "--wait", "--json"]));
    wait_until("the tool to block on session.lock", || {
        blocked_on(dev, ino).contains(&tool.pid()).then_some(())
    });
    let progress = wait_until("the tool to say whom it waits for", || {
        let e = tool.stderr_so_far();
        e.contains("waiting for").then_some(e)
    });
    assert!(
        progress.contains(&format!(
            "waiting for the agent holding session.lock (pid {holder} "
        )),
        "stderr names the holder: {progress}"
    );
    // Nothing of the user's changes while it waits. The run's first journal is already built
    // and synced in its staging directory next to `~/.local` (so that under the lock only its
    // rename is left); a refused or timed-out wait removes it again (the tests above).
    let mut during = w.manifest();
    during.retain(|k, _| !k.windows(16).any(|x| x == b"..local.dci-stat"));
    assert_same_except(
        &before,
        &during,
        Ignore {
            dir_mtime: true,
            ..Ignore::default()
        },
        "nothing changes while it waits, but the staged journal",
    );
    assert_eq!(agent.finish(), 0);
    let (st, out, err) = tool.finish();
    let doc = json(&out);
    assert_eq!(st.code(), Some(0), "{doc:#}\n{err}");
    assert_eq!(doc["changed"], true);
    was.assert_migrated(&w, "--wait after the agent");
    assert_eq!(
        inode(&w.config.join("session.lock")),
        (dev, ino),
        "moved, not recreated"
    );
}

/// The tool run as an operator would (`--yes --wait --json`, `extra` added to its environment)
/// under strace, which stops it with SIGSTOP at its first `syscall` on `path`: the tests that
/// need the tool paused at a known point inside its locked window all start it this way, and
/// differ only in the syscall, the path and what they then wait for.
fn tool_stopped_at(w: &World, syscall: &str, path: &Path, extra: &[(&str, &str)]) -> Output {
    let mut cmd = std::process::Command::new("strace");
    cmd.args(["-f", "-o", "/dev/null", "-e"])
        .arg(format!("trace={syscall}"))
        .arg("-e")
        .arg(format!("inject={syscall}:signal=SIGSTOP:when=1"))
        .arg("-P")
        .arg(path)
        .arg(BIN)
        .args(w.path_args())
        .args(["--yes", "--wait", "--json"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &w.home)
        .env("LANG", "C.UTF-8")
        .envs(extra.iter().copied())
        .stdin(std::process::Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    Output::spawn(&mut cmd)
}

/// strace's child that is stopped (strace also stops it once at start, before exec) and holds
/// the flock on `(dev, ino)`: the tool, paused inside its locked window.
fn stopped_holding(strace: &Output, dev: u64, ino: u64) -> Option<u32> {
    children(strace.pid())
        .into_iter()
        .find(|p| matches!(proc_state(*p), Some('t' | 'T')) && granted_to(dev, ino).contains(p))
}

/// The tool (`--yes --wait --json`, with `env` added) stopped by strace right after its
/// flock(2) on `~/.claude/session.lock` succeeded, and an agent started then, queued behind it.
struct LockedWindow {
    /// `~/.claude` and `~/.claude.json` before the tool started.
    before: Before,
    strace: Output,
    /// The stopped tool's pid (strace's child).
    tool: u32,
    agent: Agent,
    /// The pid blocked in flock(2): the agent's `flock`.
    queued: u32,
    /// session.lock's (dev, ino).
    inode: (u64, u64),
}

/// `~/.claude` (without session.lock) and `~/.claude.json` as they were.
struct Before {
    claude: Manifest,
    json: Vec<u8>,
}

impl Before {
    fn take(w: &World) -> Before {
        Before {
            claude: claude_manifest_without_lock(w),
            json: fs::read(w.claude_json()).unwrap(),
        }
    }

    /// The migration is complete, against what `~/.claude` held then.
    #[track_caller]
    fn assert_migrated(&self, w: &World, what: &str) {
        assert_migrated(w, &self.claude, &self.json, what);
    }
}

fn locked_window(w: &World, env: &[(&str, &str)]) -> LockedWindow {
    let before = Before::take(w);
    let lock = w.claude().join("session.lock");
    let (dev, ino) = inode(&lock);
    let strace = tool_stopped_at(w, "flock", lock.as_ref(), env);
    // Stopped (strace also stops it once at start, before exec) and holding the lock.
    let tool = wait_until("the tool to stop holding session.lock", || {
        stopped_holding(&strace, dev, ino)
    });
    let agent = Agent::start(&w.home);
    let queued = wait_until("the agent to queue on session.lock", || {
        blocked_on(dev, ino).into_iter().next()
    });
    LockedWindow {
        before,
        strace,
        tool,
        agent,
        queued,
        inode: (dev, ino),
    }
}

/// Let the tool that strace stopped go on.
fn resume(tool: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tool as i32),
        nix::sys::signal::Signal::SIGCONT,
    )
    .unwrap();
}

/// An agent that starts `flock -w 600` on `~/.claude/session.lock` while the migration holds
/// it gets the lock only after the migration released it, on the same inode as
/// `<config>/session.lock`, and its `claude` then finds `~/.claude` migrated. The tool is
/// stopped (by strace, with SIGSTOP right after its flock(2) succeeded) so the agent starts at
/// a known point inside the locked window.
#[test]
fn an_agent_starting_during_the_migration_queues_and_finds_it_migrated() {
    if !have_strace() {
        skip!("strace is not installed (apt-get install strace)");
    }
    let w = World::realistic();
    let mut lw = locked_window(&w, &[]);
    let (dev, ino) = lw.inode;
    assert_ne!(lw.queued, lw.tool);
    assert!(
        lw.agent.saw().is_none(),
        "the agent must not run before the switch"
    );
    resume(lw.tool);
    let (st, out, err) = lw.strace.finish();
    let doc = json(&out);
    assert_eq!(st.code(), Some(0), "{doc:#}\n{err}");
    let saw = lw.agent.wait_locked();
    assert_eq!(
        saw.claude,
        format!("link:{}", w.config.display()),
        "its claude finds ~/.claude migrated"
    );
    assert!(saw.settings, "and its files through the link");
    assert_eq!(saw.lock, (dev, ino), "it locked the inode it queued on");
    assert_eq!(
        inode(&w.config.join("session.lock")),
        (dev, ino),
        "which is <config>/session.lock"
    );
    assert_eq!(lw.agent.finish(), 0);
    lw.before
        .assert_migrated(&w, "agent queued during the switch");
    // An agent starting now reaches the same lock through the link.
    let mut later = Agent::holding(&w.home);
    assert_eq!(later.saw().unwrap().lock, (dev, ino));
    assert_eq!(later.finish(), 0);
}

/// `--wait 1` against an agent that keeps the lock: exit 3 (`wait-timeout`), the world
/// unchanged (no journal either), the holder named with the fix; the agent keeps its lock.
#[test]
fn wait_times_out_with_exit_3_and_changes_nothing() {
    let w = World::realistic();
    let agent = Agent::holding(&w.home);
    let holder = agent.saw().unwrap().pid;
    let before = w.manifest();
    let (code, doc) = run_json(w.cmd().args(["--yes", "--wait", "1", "--json"]));
    assert_eq!(code, 3, "{doc:#}");
    assert_eq!(doc["error"]["kind"], "wait-timeout", "{doc:#}");
    assert_eq!(doc["changed"], false);
    assert_same(&before, &w.manifest(), "--wait 1 timed out");
    assert!(!w.home.join(".local").exists(), "no state dir, no journal");
    let msg = doc["error"]["message"].as_str().unwrap();
    assert!(msg.contains(&format!("pid {holder} (")), "{msg}");
    let fix = doc["error"]["fix"].as_str().unwrap();
    assert!(
        fix.contains("--wait") && fix.contains("disinto down"),
        "{fix}"
    );
    assert!(
        fix.contains(&format!("--home {}", w.home.display())),
        "the fix repeats the run's options: {fix}"
    );
    assert!(
        is_flocked(&w.claude().join("session.lock")),
        "still the agent's"
    );
    drop(agent);
}

/// The tool killed while it holds the lock (after the move, before the link): the queued agent
/// gets the lock at once (the kernel drops a flock with its holder), and the journal is
/// recoverable: `status` says interrupted, `migrate` finishes it.
#[test]
fn a_kill_while_holding_the_lock_frees_the_agents_and_resumes() {
    if !have_strace() {
        skip!("strace is not installed (apt-get install strace)");
    }
    let w = World::realistic();
    let mut lw = locked_window(&w, &[("DCI_FAILPOINTS", "applied-move-config=kill")]);
    let (dev, ino) = lw.inode;
    resume(lw.tool);
    let (st, _, err) = lw.strace.finish();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        st.signal(),
        Some(9),
        "killed at the failpoint: {st:?}\n{err}"
    );
    let saw = lw.agent.wait_locked();
    assert_eq!(saw.lock, (dev, ino));
    // Killed right after the move: `~/.claude` is already the link to the config dir (the
    // move and the link are one exchange of names), so the agent never finds it missing.
    assert_eq!(
        saw.claude,
        format!("link:{}", w.shared.join("config").display()),
        "killed between the move and the link step"
    );
    let before = w.manifest();
    let (code, doc) = run_json(w.cmd_sub("status").arg("--json"));
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["layout"], "interrupted", "{doc:#}");
    assert_same(&before, &w.manifest(), "status");
    // Resumed with --wait while the agent still holds the lock (now <config>/session.lock):
    // it waits for it, then finishes the migration.
    let tool = Output::spawn(w.cmd().args(["--yes", "--wait", "--json"]));
    wait_until("the resumed run to wait for the agent", || {
        (blocked_on(dev, ino).contains(&tool.pid()) && tool.stderr_so_far().contains("waiting for"))
            .then_some(())
    });
    assert_same(&before, &w.manifest(), "nothing while it waits");
    assert_eq!(lw.agent.finish(), 0);
    let (st, out, err) = tool.finish();
    assert_eq!(st.code(), Some(0), "resume: {out}\n{err}");
    lw.before.assert_migrated(&w, "resumed after the kill");
}

/// `--wait --dry-run` says what it would wait for and returns at once, exit 0, changing
/// nothing; without `--wait` the same machine is refused. A process working in `~/.claude`
/// outside the wrapper is refused even with `--wait`, named.
#[test]
fn dry_run_with_wait_reports_and_does_not_wait() {
    let w = World::realistic();
    let agent = Agent::holding(&w.home);
    let holder = agent.saw().unwrap().pid;
    let before = w.manifest();
    let r = run(w.cmd().args(["--dry-run", "--wait"]));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains(&format!(
            "--wait: waits (up to 600 s) for the agent holding session.lock (pid {holder} "
        )),
        "{}",
        r.stdout
    );
    // The JSON preview carries what the text one says: whom it would wait for, how long at
    // most, and what agents wait for while it holds the lock (one filesystem: the switch).
    let (code, doc) = run_json(w.cmd().args(["--dry-run", "--wait", "--json"]));
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["wait"]["limit_s"], 600, "{doc:#}");
    assert_eq!(doc["wait"]["holds_lock_for"], "switch", "{doc:#}");
    assert_eq!(doc["wait"]["estimated_hold_s"], serde_json::Value::Null);
    let waits_for = doc["wait"]["waits_for"].as_array().expect("waits_for");
    assert_eq!(waits_for.len(), 1, "{doc:#}");
    assert!(
        waits_for[0]
            .as_str()
            .unwrap()
            .starts_with(&format!("the agent holding session.lock (pid {holder} ")),
        "{doc:#}"
    );
    let (code, doc) = run_json(w.cmd().args(["--dry-run", "--json"]));
    assert_eq!(code, 3, "without --wait: {doc:#}");
    assert_eq!(doc["error"]["kind"], "agent-running");
    assert!(
        doc.get("wait").is_none(),
        "no wait field without --wait: {doc:#}"
    );
    assert_same(&before, &w.manifest(), "dry runs");

    let mut loose = std::process::Command::new("sleep")
        .arg("3600")
        .current_dir(w.claude().join("projects"))
        .spawn()
        .unwrap();
    let (code, doc) = run_json(w.cmd().args(["--yes", "--wait", "--json"]));
    let pid = loose.id();
    let _ = loose.kill();
    let _ = loose.wait();
    assert_eq!(code, 3, "{doc:#}");
    assert_eq!(doc["error"]["kind"], "agent-running");
    let msg = doc["error"]["message"].as_str().unwrap();
    assert!(msg.contains(&format!("{pid} (sleep)")), "{msg}");
    assert!(
        !msg.contains(&format!("{holder} (")),
        "the wrapped agent is not blamed: {msg}"
    );
    assert_same(&before, &w.manifest(), "refused");
    drop(agent);
}

// ---------------------------------------------------------------------------------------------
// Through the binary: containers
// ---------------------------------------------------------------------------------------------

/// One filesystem: a container that bind-mounts `~/.claude` is named in the plan, the
/// migration goes ahead, and the container still sees the files (its mount followed the move).
#[test]
fn container_on_one_filesystem_is_named_and_follows_the_move() {
    let w = World::realistic();
    let Some(ctr) = Container::start(&w.claude(), "/home/agent/.claude", "") else {
        return;
    };
    let inside = Path::new(&format!("/proc/{}/root", ctr.pid())).join(
        ctr.mount_point
            .strip_prefix("/")
            .unwrap()
            .join("settings.json"),
    );
    let settings = fs::read(w.claude().join("settings.json")).unwrap();
    assert_eq!(fs::read(&inside).unwrap(), settings, "the container's view");
    let (code, doc) = run_json(w.cmd().args(["--dry-run", "--json"]));
    assert_eq!(code, 0, "{doc:#}");
    let mv = plan_step(&doc, "move-config");
    let detail = mv["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(&format!("pid {} (sleep)", ctr.pid()))
            && detail.contains("their mount follows the move"),
        "{mv:#}"
    );
    let (code, doc) = run_json(w.cmd().args(["--yes", "--json"]));
    assert_eq!(code, 0, "{doc:#}");
    assert!(fs::read_link(w.claude()).is_ok());
    assert_eq!(
        fs::read(&inside).unwrap(),
        settings,
        "the container's mount followed the move"
    );
    fs::write(w.config.join("written-after"), b"x").unwrap();
    assert!(
        inside.with_file_name("written-after").exists(),
        "the container and the config dir are one directory"
    );
}

/// Across filesystems: refused (exit 3, `container-mount`), naming the pid and the container
/// id, with the fix; nothing changed.
#[test]
fn container_across_filesystems_is_refused() {
    let Some(w) = World::cross_device() else {
        return;
    };
    build_realistic_home(&w.home);
    write_env_file(&w.env_file);
    write_bashrc(&w.profile);
    let Some(ctr) = Container::start(&w.claude(), "/home/agent/.claude", "") else {
        return;
    };
    let cg = FakeDockerCgroup::new();
    let with_id = cg.as_ref().is_some_and(|c| c.add(ctr.pid()));
    let before = w.manifest();
    for args in [
        &["--dry-run", "--json"][..],
        &["--yes", "--wait", "--json"][..],
    ] {
        let (code, doc) = run_json(w.cmd().args(args));
        assert_eq!(code, 3, "{args:?}: {doc:#}");
        assert_eq!(doc["error"]["kind"], "container-mount", "{doc:#}");
        let msg = doc["error"]["message"].as_str().unwrap();
        assert!(msg.contains(&format!("pid {} (sleep)", ctr.pid())), "{msg}");
        assert!(msg.contains("/home/agent/.claude"), "{msg}");
        let fix = doc["error"]["fix"].as_str().unwrap();
        assert!(
            fix.contains("disinto down") && fix.contains("--shared-dir"),
            "{fix}"
        );
        if with_id {
            let id = &cg.as_ref().unwrap().id[..12];
            assert!(msg.contains(id) && fix.contains(id), "{msg}\n{fix}");
        }
    }
    assert_same(&before, &w.manifest(), "refused");
    assert!(!w.home.join(".local").exists());
}

/// `disinto init`'s snippet (docs/disinto-init.sh) on a running factory: it passes `--wait`, so
/// it waits for the agent instead of stopping init, then migrates, and returns 0.
#[test]
fn disinto_init_snippet_waits_for_a_running_agent() {
    let w = World::realistic();
    let lock = w.claude().join("session.lock");
    let mut agent = Agent::holding(&w.home);
    let (dev, ino) = inode(&lock);
    let snippet = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/disinto-init.sh");
    let bin_dir = Path::new(BIN).parent().unwrap();
    let mut cmd = std::process::Command::new("bash");
    cmd.arg("-c")
        .arg(r#"set -euo pipefail; . "$1"; shift; disinto_setup_claude_config "$@""#)
        .arg("bash")
        .arg(&snippet)
        .arg("--profile")
        .arg(&w.profile)
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
        .env("HOME", &w.home)
        .env("LANG", "C.UTF-8")
        .env("FACTORY_ROOT", w.env_file.parent().unwrap())
        .env("CLAUDE_SHARED_DIR", &w.shared)
        // The snippet passes --agent-uid: here the agents run as the home's owner.
        .env(
            "DISINTO_AGENT_UID",
            fs::metadata(&w.home).unwrap().uid().to_string(),
        )
        .stdin(std::process::Stdio::null());
    let init = Output::spawn(&mut cmd);
    wait_until("disinto init to wait for the agent", || {
        (!blocked_on(dev, ino).is_empty() && init.stderr_so_far().contains("waiting for"))
            .then_some(())
    });
    assert!(
        fs::symlink_metadata(w.claude()).unwrap().is_dir(),
        "not yet"
    );
    assert_eq!(agent.finish(), 0);
    let (st, out, err) = init.finish();
    assert_eq!(st.code(), Some(0), "{out}\n{err}");
    assert_eq!(fs::read_link(w.claude()).unwrap(), w.config);
    assert!(err.contains("Claude config is shared"), "{err}");
}

/// A home without session.lock, `--wait`: migrated with nothing of the tool's left in the
/// config dir (the lock file it created for the switch is gone, the directory's times as they
/// were); and a run that fails and rolls back leaves the world exactly as it was.
#[test]
fn wait_leaves_no_lock_file_of_its_own() {
    let w = World::realistic();
    fs::remove_file(w.claude().join("session.lock")).unwrap();
    let claude_before = manifest(&w.claude());
    let before = w.manifest();
    let mut cmd = w.cmd();
    cmd.args(["--yes", "--wait", "--json"])
        .env("DCI_FAILPOINTS", "apply-write-profile=error");
    let (code, doc) = run_json(&mut cmd);
    assert_eq!(code, 1, "{doc:#}");
    assert_same(&before, &w.manifest(), "rolled back");

    let (code, doc) = run_json(w.cmd().args(["--yes", "--wait", "--json"]));
    assert_eq!(code, 0, "{doc:#}");
    let config = assert_config_holds(&claude_before, &w.config, "after the retry");
    assert_eq!(
        config[&b"."[..]].mtime,
        claude_before[&b"."[..]].mtime,
        "the directory's times put back"
    );
}

/// `undo --wait` on a migrated home whose agent holds the lock (opened through the `~/.claude`
/// link: `<config>/session.lock`): without `--wait` refused; with it, it waits, then puts
/// `~/.claude` back; an agent queued meanwhile finds the real directory, same lock inode.
#[test]
fn undo_with_wait_waits_for_the_agent() {
    let w = World::realistic();
    let claude_before = claude_manifest_without_lock(&w);
    let (code, doc) = run_json(w.cmd().args(["--yes", "--json"]));
    assert_eq!(code, 0, "{doc:#}");
    let lock = w.config.join("session.lock");
    let (dev, ino) = inode(&lock);
    let mut agent = Agent::holding(&w.home);
    assert_eq!(agent.saw().unwrap().lock, (dev, ino), "through the link");
    let before = w.manifest();
    let (code, doc) = run_json(w.cmd_sub("undo").args(["--yes", "--json"]));
    assert_eq!(code, 3, "{doc:#}");
    assert_eq!(doc["error"]["kind"], "agent-running");
    let r = run(w.cmd_sub("undo").args(["--dry-run", "--wait"]));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("--wait: waits (up to 600 s) for the agent holding session.lock"),
        "{}",
        r.stdout
    );
    assert_same(&before, &w.manifest(), "refused, and a dry run");
    let tool = Output::spawn(w.cmd_sub("undo").args(["--yes", "--wait", "--json"]));
    wait_until("undo to wait for the agent", || {
        (blocked_on(dev, ino).contains(&tool.pid()) && tool.stderr_so_far().contains("waiting for"))
            .then_some(())
    });
    assert_same(&before, &w.manifest(), "nothing while it waits");
    // (Its `9>` truncates the lock file, moving its mtime: the agent's doing.)
    let mut queued = Agent::start(&w.home);
    wait_until("a second agent to queue", || {
        (blocked_on(dev, ino).len() >= 2).then_some(())
    });
    assert_eq!(agent.finish(), 0);
    let (st, out, err) = tool.finish();
    assert_eq!(st.code(), Some(0), "{out}\n{err}");
    let saw = queued.wait_locked();
    assert_eq!(saw.claude, "dir", "the queued agent finds ~/.claude back");
    assert_eq!(saw.lock, (dev, ino));
    assert_eq!(queued.finish(), 0);
    assert_same_except(
        &claude_before,
        &claude_manifest_without_lock(&w),
        Ignore::default(),
        "~/.claude after undo",
    );
}

/// Across filesystems: the plan says the copy runs under the lock, with an estimate; the run
/// holds session.lock for the whole copy, so an agent that starts during it queues (touching
/// the lock file's times as it opens it, which the copy tolerates) and runs only after,
/// finding `~/.claude` migrated. Its lock is on the old lock file (removed with the
/// source): the documented limit of a copy, where no inode moves.
#[test]
fn across_filesystems_the_copy_runs_under_the_lock() {
    if !have_strace() {
        skip!("strace is not installed (apt-get install strace)");
    }
    let Some(w) = World::cross_device() else {
        return;
    };
    build_realistic_home(&w.home);
    write_env_file(&w.env_file);
    write_bashrc(&w.profile);
    let (code, doc) = run_json(w.cmd().args(["--dry-run", "--wait", "--json"]));
    assert_eq!(code, 0, "{doc:#}");
    let mv = plan_step(&doc, "move-config");
    let detail = mv["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("agents wait while it copies") && detail.contains(" s for "),
        "{mv:#}"
    );
    let lock = w.claude().join("session.lock");
    let claude_before = claude_manifest_without_lock(&w);
    let json_before = fs::read(w.claude_json()).unwrap();
    let (dev, ino) = inode(&lock);
    // Stopped in the middle of the copy (at the mkdir of its staging directory), holding the
    // lock: the agent that starts then "truncates" session.lock with its `9>` while the tree
    // is being copied, which must not fail the copy's source check.
    let mut staging = w.config.as_os_str().to_os_string();
    staging.push(".dci-incoming");
    let strace = tool_stopped_at(&w, "mkdir", staging.as_ref(), &[]);
    let tool = wait_until("the tool to stop in the copy, holding session.lock", || {
        children(strace.pid()).into_iter().find(|p| {
            matches!(proc_state(*p), Some('t' | 'T'))
                && granted_to(dev, ino).contains(p)
                && Path::new(&staging).exists()
        })
    });
    let mut agent = Agent::start(&w.home);
    wait_until("the agent to queue", || {
        blocked_on(dev, ino).into_iter().next()
    });
    resume(tool);
    let (st, out, err) = strace.finish();
    assert_eq!(st.code(), Some(0), "{out}\n{err}");
    let saw = agent.wait_locked();
    assert_eq!(saw.claude, format!("link:{}", w.config.display()));
    assert!(saw.settings);
    assert_eq!(saw.lock, (dev, ino), "the lock it queued on: the old file");
    assert_ne!(inode(&w.config.join("session.lock")), (dev, ino), "a copy");
    assert_eq!(agent.finish(), 0);
    let mut config = manifest(&w.config);
    config.remove(&b".claude.json"[..]).unwrap();
    config.remove(&b"session.lock"[..]).unwrap();
    assert_same_except(
        &claude_before,
        &config,
        Ignore {
            root: true,
            ..Default::default()
        },
        "copied config dir",
    );
    assert_eq!(
        fs::read(w.config.join(".claude.json")).unwrap(),
        json_before
    );
}
