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
    let held = guard.release();
    assert!(held > Duration::ZERO);
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
    assert_eq!(e.kind, "wait-timeout");
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
/// `~/.claude`, so that agents starting during the migration queue on it.
#[test]
fn creates_the_lock_file_when_absent() {
    let w = World::realistic();
    let lock = w.claude().join("session.lock");
    fs::remove_file(&lock).unwrap();
    if is_root() {
        std::os::unix::fs::chown(w.claude(), Some(4242), Some(4343)).unwrap();
    }
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
    let err = waiter::wait_for_agents(&targets(&w), Duration::from_secs(5), &mut |_| {})
        .expect_err("a symlinked session.lock");
    assert!(
        matches!(
            err,
            WaitError::NotALockFile {
                found: "a symlink",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.to_error("x").exit.code(), 3);
    assert_same(&before, &w.manifest(), "refused symlink");
    assert!(!is_flocked(&target));

    fs::remove_file(&lock).unwrap();
    nix::unistd::mkfifo(&lock, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let err = waiter::wait_for_agents(&targets(&w), Duration::from_secs(5), &mut |_| {})
        .expect_err("a FIFO session.lock");
    assert!(
        matches!(
            err,
            WaitError::NotALockFile {
                found: "a FIFO",
                ..
            }
        ),
        "{err:?}"
    );
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
