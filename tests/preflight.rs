//! Preflight refusals and hostile machines (issue 3): a full disk (for real, on a tmpfs), no
//! permission (as `nobody`), an agent running, two migrations at once, and ownership under root.
//! Every refusal must exit 3 and change nothing at all, journal included.

mod common;

use common::homes::chown_r;
use common::*;
use serde_json::Value;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The realistic home, env file and rc file, with the shared dir moved onto `mnt` (which
/// joins the world's manifest as `tmpfs/...`).
fn world_on(mnt: &TmpfsMount) -> World {
    let mut w = World::realistic();
    w.shared = mnt.path.join("claude-shared");
    w.config = w.shared.join("config");
    w.roots.push(("tmpfs", mnt.path.clone()));
    w
}

/// `world.manifest()` without the entries under `tmpfs/<name>` (a filler the test owns).
fn manifest_without(w: &World, name: &str) -> Manifest {
    let prefix = format!("tmpfs/{name}");
    w.manifest()
        .into_iter()
        .filter(|(k, _)| !k.starts_with(prefix.as_bytes()))
        .collect()
}

/// Fill the filesystem holding `dir` completely, with files in `dir`: one written in 1 MiB
/// pieces until ENOSPC, then one in 4 KiB pieces, then one byte by byte.
fn fill(dir: &Path) {
    let chunk = vec![0x5au8; 1 << 20];
    for (i, size) in [1usize << 20, 4096, 1].into_iter().enumerate() {
        let Ok(mut f) = fs::File::create(dir.join(format!("fill-{i}"))) else {
            break;
        };
        while let Ok(()) = f.write_all(&chunk[..size]) {}
    }
}

fn step_status<'a>(doc: &'a Value, id: &str) -> &'a Value {
    doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .map(|s| &s["status"])
        .unwrap_or(&Value::Null)
}

/// A refusal: exit 3 with `kind`, nothing changed, no state dir.
#[track_caller]
fn assert_refused(w: &World, before: &Manifest, doc: &Value, code: i32, kind: &str, what: &str) {
    assert_eq!(code, 3, "{what}: {doc:#}");
    assert_eq!(doc["error"]["kind"], kind, "{what}: {doc:#}");
    assert_eq!(doc["changed"], false, "{what}: {doc:#}");
    assert_same(before, &w.manifest(), what);
    assert!(!exists(&w.home.join(".local")), "{what}: state dir created");
}

// ---------------------------------------------------------------------------------------------
// Disk full
// ---------------------------------------------------------------------------------------------

/// The shared dir on a 4 MiB tmpfs, a home of ~7 MiB: refused before anything changes.
#[test]
fn disk_too_small_is_refused_before_any_change() {
    let Some(mnt) = mount_tmpfs("4M") else { return };
    let w = world_on(&mnt);
    write_file(
        &w.claude().join("projects/-home-user-src-app/huge.jsonl"),
        &transcript("huge", 6 << 20),
        0o644,
    );
    let before = w.manifest();
    let (code, doc) = run_json(w.cmd().args(["--yes", "--json"]));
    assert_refused(&w, &before, &doc, code, "no-space", "4 MiB tmpfs");
    let msg = doc["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("free") && msg.contains("needs"),
        "says how much is needed and free: {msg}"
    );
    assert!(
        doc["error"]["fix"]
            .as_str()
            .unwrap()
            .contains("--shared-dir"),
        "{doc:#}"
    );
    // --dry-run surfaces it too.
    let (code, doc) = run_json(w.cmd().args(["--dry-run", "--json"]));
    assert_refused(&w, &before, &doc, code, "no-space", "4 MiB tmpfs, dry run");
}

/// Thousands of tiny files take a block each: 8000 files of under 110 bytes need ~32 MiB on a
/// tmpfs, though their sizes add up to under 1 MiB. A check on the sizes alone lets the copy
/// run into ENOSPC; the preflight must count blocks and refuse.
/// A shared dir on a tmpfs of `size` with a home that `fill` makes too big for it: refused,
/// `no-space`, before any change.
fn refused_for_space(size: &str, fill: impl FnOnce(&World), what: &str) {
    let Some(mnt) = mount_tmpfs(size) else {
        return;
    };
    let w = world_on(&mnt);
    fill(&w);
    let before = w.manifest();
    let (code, doc) = run_json(w.cmd().args(["--yes", "--json"]));
    assert_refused(&w, &before, &doc, code, "no-space", what);
}

#[test]
fn many_small_files_are_counted_in_blocks() {
    refused_for_space(
        "20M",
        |w| build_many_files(&w.claude().join("projects/-home-user-src-many"), 8000),
        "8000 small files, 20 MiB",
    );
}

/// Directories need inodes too: a tmpfs with few inodes and a home of many empty directories.
#[test]
fn inodes_for_directories_are_counted() {
    refused_for_space(
        "64M,nr_inodes=1500",
        |w| {
            for i in 0..2000 {
                fs::create_dir_all(w.claude().join(format!("shell-snapshots/d{i:04}"))).unwrap();
            }
        },
        "2000 dirs, 1500 inodes",
    );
}

/// The disk fills up after the preflight (another process writes to it while the migration
/// runs): the copy (or the move of ~/.claude.json after it) fails with ENOSPC, everything is
/// rolled back, exit 1, not one byte lost.
#[test]
fn disk_filling_up_during_the_run_rolls_back() {
    let Some(mnt) = mount_tmpfs("24M") else {
        return;
    };
    let w = world_on(&mnt);
    build_many_files(&w.claude().join("projects/-home-user-src-big"), 500);
    let filler = mnt.path.join("filler");
    mkdir(&filler, 0o755);
    let before = manifest_without(&w, "filler");
    if !have_strace() {
        skip!("strace is not installed (apt-get install strace)");
    }
    // The shared dir exists once the first step ran, after the preflight and before the copy.
    // The run stops after each directory it makes (strace injects SIGSTOP); at the first stop
    // that finds the shared dir, the disk fills while the run stands still.
    let mut filled = false;
    let (status, stdout, stderr) = run_pausing_after(
        w.cmd().args(["--yes", "--json"]),
        &["mkdir", "mkdirat"],
        || {
            if !filled && exists(&w.shared) {
                fill(&filler);
                filled = true;
            }
        },
    );
    assert!(
        filled,
        "the run never made the shared dir: {stdout}\n{stderr}"
    );
    let doc: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    let out = std::process::Output {
        status,
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    assert_eq!(out.status.code(), Some(1), "{doc:#}");
    assert_eq!(doc["error"]["kind"], "apply-failed", "{doc:#}");
    let msg = doc["error"]["message"].as_str().unwrap();
    assert!(msg.contains("No space left"), "{msg}");
    let failed: Vec<&Value> = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "failed")
        .map(|s| &s["id"])
        .collect();
    eprintln!("failed step: {failed:?}");
    assert!(
        failed == [&Value::from("move-config")] || failed == [&Value::from("move-claude-json")],
        "{doc:#}"
    );
    assert_eq!(
        step_status(&doc, "create-shared-dir"),
        "rolled-back",
        "{doc:#}"
    );
    assert_same(
        &before,
        &manifest_without(&w, "filler"),
        "rolled back on ENOSPC",
    );
    assert!(!exists(&w.home.join(".local")));
}

/// A run killed before its copy, then the disk fills: the resumed run re-checks the space and
/// refuses (exit 3, the journal kept); undo restores everything.
#[cfg(feature = "failpoints")]
#[test]
fn resume_rechecks_space() {
    let Some(mnt) = mount_tmpfs("64M") else {
        return;
    };
    let w = world_on(&mnt);
    let filler = mnt.path.join("filler");
    mkdir(&filler, 0o755);
    let before = manifest_without(&w, "filler");
    let out = w
        .cmd()
        .args(["--yes", "--json"])
        .env("DCI_FAILPOINTS", "apply-move-config=kill")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(9), "{out:?}");
    fill(&filler);
    let (code, doc) = run_json(w.cmd().args(["--yes", "--json"]));
    assert_eq!(code, 3, "{doc:#}");
    assert_eq!(doc["error"]["kind"], "no-space", "{doc:#}");
    assert_eq!(doc["layout"], "interrupted", "{doc:#}");
    assert!(state_dir(&w).join("journal.json").is_file());
    let (code, doc) = run_json(w.cmd_sub("undo").args(["--yes", "--json"]));
    assert_eq!(code, 0, "{doc:#}");
    assert_same(
        &before,
        &manifest_without(&w, "filler"),
        "undo after the refusal",
    );
}

/// `undo` of a cross-device migration copies the config dir back: with too little room left
/// in the home's filesystem (thousands of small files take a block each) it refuses before
/// changing anything; with room again it restores every byte.
#[test]
fn undo_without_room_to_copy_back_is_refused() {
    // Room for the home (~33 MiB of blocks), and to copy it back once the filler is gone.
    let Some(mnt) = mount_tmpfs("96M") else {
        return;
    };
    let Some(mut w) = World::cross_device() else {
        return;
    };
    // The home on the tmpfs, the shared dir on /dev/shm.
    w.home = mnt.path.join("home/user");
    w.profile = w.home.join(".bashrc");
    w.roots.push(("tmpfs", mnt.path.clone()));
    mkdir(&mnt.path.join("home"), 0o755);
    build_realistic_home(&w.home);
    build_many_files(&w.claude().join("projects/-home-user-src-many"), 8000);
    write_env_file(&w.env_file);
    write_bashrc(&w.profile);
    let filler = mnt.path.join("filler");
    mkdir(&filler, 0o755);
    let before = manifest_without(&w, "filler");
    let (code, doc) = run_json(w.cmd().args(["--yes", "--json"]));
    assert_eq!(code, 0, "{doc:#}");
    // Leave 24 MiB free: more than the files' sizes (~2 MiB) plus the 16 MiB margin, less
    // than the ~33 MiB of blocks they take.
    let v = nix::sys::statvfs::statvfs(&mnt.path).unwrap();
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    let avail = v.blocks_available() as u64 * v.fragment_size() as u64;
    let keep = 24u64 << 20;
    assert!(avail > keep, "tmpfs has only {avail} bytes free");
    let mut f = fs::File::create(filler.join("fill")).unwrap();
    let chunk = vec![0u8; 1 << 20];
    let mut left = avail - keep;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    drop(f);
    let mid = w.manifest();
    let (code, doc) = run_json(w.cmd_sub("undo").args(["--yes", "--json"]));
    assert_eq!(code, 3, "{doc:#}");
    assert_eq!(doc["error"]["kind"], "no-space", "{doc:#}");
    assert_same(&mid, &w.manifest(), "refused undo");
    // Room again: undo restores the world.
    fs::remove_file(filler.join("fill")).unwrap();
    let (code, doc) = run_json(w.cmd_sub("undo").args(["--yes", "--json"]));
    assert_eq!(code, 0, "{doc:#}");
    assert_same(&before, &manifest_without(&w, "filler"), "undo with room");
}

/// The library's verified copy into a full filesystem: an error, the source untouched.
#[test]
fn verified_copy_into_a_full_filesystem_fails_cleanly() {
    let Some(mnt) = mount_tmpfs("2M") else { return };
    let w = World::realistic();
    write_file(
        &w.claude().join("projects/big.jsonl"),
        &transcript("big", 3 << 20),
        0o644,
    );
    let src_before = manifest(&w.claude());
    let dst = mnt.path.join("config");
    let res = disinto_claude_init::fsops::copy_tree_verified(
        &w.claude(),
        &dst,
        &disinto_claude_init::fsops::CopyOptions::default(),
        &|_, _| {},
    );
    let err = res
        .expect_err("a 3 MiB tree cannot fit in 2 MiB")
        .to_string();
    assert!(err.contains("No space left"), "{err}");
    assert_same(&src_before, &manifest(&w.claude()), "source after ENOSPC");
}

// ---------------------------------------------------------------------------------------------
// No permission
// ---------------------------------------------------------------------------------------------

const NOBODY: u32 = 65534;

/// `setpriv` to nobody, with the world's environment, or None (reason printed).
fn as_nobody(w: &World) -> Option<Command> {
    if !is_root() {
        skipped("dropping to nobody needs root");
        return None;
    }
    let probe = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "--version",
        ])
        .stdin(Stdio::null())
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            skipped(&format!(
                "the binary cannot run as nobody ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ));
            return None;
        }
        Err(e) => {
            skipped(&format!("no setpriv: {e}"));
            return None;
        }
    }
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(BIN)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", &w.home)
        .env("LANG", "C.UTF-8")
        .args(w.path_args())
        .stdin(Stdio::null());
    Some(c)
}

/// nobody's own home, a shared dir under a root-owned 0755 directory: exit 3 no-permission,
/// with sudo and --shared-dir in the message, and not one thing created.
#[test]
fn unprivileged_user_without_permission_is_refused() {
    let w = World::realistic();
    chown_r(&w.home, NOBODY, NOBODY);
    chown_r(w.env_file.parent().unwrap(), NOBODY, NOBODY);
    let Some(mut cmd) = as_nobody(&w) else { return };
    let before = w.manifest();
    let (code, doc) = run_json(cmd.args(["--yes", "--json"]));
    assert_refused(&w, &before, &doc, code, "no-permission", "as nobody");
    let text = format!("{} {}", doc["error"]["message"], doc["error"]["fix"]);
    assert!(
        text.contains("sudo") && text.contains("--shared-dir"),
        "{text}"
    );
    // Human output says the same on stderr.
    let r = run(as_nobody(&w).unwrap().arg("--yes"));
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("sudo") && r.stderr.contains("--shared-dir"),
        "{}",
        r.stderr
    );
    assert_same(&before, &w.manifest(), "as nobody, human");
    // With a shared dir nobody can write, the same user migrates fine.
    let mut w2 = w;
    w2.shared = w2.home.join("claude-shared");
    w2.config = w2.shared.join("config");
    let claude_before = manifest(&w2.claude());
    let json_before = fs::read(w2.claude_json()).unwrap();
    let (code, doc) = run_json(as_nobody(&w2).unwrap().args(["--yes", "--json"]));
    assert_eq!(code, 0, "{doc:#}");
    assert_migrated(
        &w2,
        &claude_before,
        &json_before,
        "as nobody, own shared dir",
    );
    let j = state_dir(&w2).join("journal.json");
    assert_eq!(fs::metadata(&j).unwrap().uid(), NOBODY);
}

// ---------------------------------------------------------------------------------------------
// An agent running
// ---------------------------------------------------------------------------------------------

/// Someone holds `flock` on `~/.claude/session.lock` (the factory's wrapper does, around every
/// Claude run): refused, nothing changed. Held here by a `flock` child process.
#[test]
fn held_session_lock_is_refused() {
    let w = World::realistic();
    let lock = w.home.join(bpath(EMPTY_FILE));
    // Its own process group, so that `flock` and the `sleep` holding the lock die together.
    // `flock` runs the shell only once it holds the lock: the line it prints is the signal.
    let mut holder = match Command::new("flock")
        .arg(&lock)
        .args(["sh", "-c", "echo locked; exec sleep 600"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => skip!("no flock(1): {e}"),
    };
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "locked\n", "flock never took the lock");
    let doc = refused_while_locked(&w, || {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(holder.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = holder.wait();
    });
    let msg = doc["error"]["message"].as_str().unwrap();
    assert!(msg.contains("session.lock"), "{msg}");
    assert!(
        doc["error"]["fix"]
            .as_str()
            .unwrap()
            .contains("disinto down"),
        "{doc:#}"
    );
    // Released: it goes through.
    let (code, doc) = run_json(w.cmd().args(["--yes", "--json"]));
    assert_eq!(code, 0, "{doc:#}");
}

/// The same, with the lock held by this very process (nix::fcntl::Flock).
#[test]
fn session_lock_held_in_process_is_refused() {
    let w = World::realistic();
    let f = fs::File::open(w.home.join(bpath(EMPTY_FILE))).unwrap();
    let held = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)
        .expect("flock");
    refused_while_locked(&w, || drop(held));
}

/// A migration while `~/.claude/session.lock` is held: refused (`agent-running`), nothing
/// changed; `release` then lets the lock go. Returns the refusal's document.
fn refused_while_locked(w: &World, release: impl FnOnce()) -> Value {
    let before = w.manifest();
    let (code, doc) = run_json(w.cmd().args(["--yes", "--json"]));
    release();
    assert_refused(w, &before, &doc, code, "agent-running", "session.lock held");
    doc
}

/// A process with its working directory in `~/.claude`: refused, naming its PID.
#[test]
fn process_inside_claude_dir_is_refused() {
    let w = World::realistic();
    let mut sleeper = Command::new("sleep")
        .arg("60")
        .current_dir(w.claude().join("projects"))
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let before = w.manifest();
    let (code, doc) = run_json(w.cmd().args(["--yes", "--json"]));
    let pid = sleeper.id();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_refused(&w, &before, &doc, code, "agent-running", "cwd in ~/.claude");
    let msg = doc["error"]["message"].as_str().unwrap();
    assert!(msg.contains(&pid.to_string()), "names PID {pid}: {msg}");
}

/// A fresh proper-lockfile lock directory (`~/.claude.lock` or `<config>.lock`): refused.
/// A stale one (10 minutes old) does not stop the migration.
#[test]
fn fresh_lock_directories_are_refused_stale_ones_are_not() {
    for which in ["home", "config"] {
        let w = World::realistic();
        let lock = if which == "home" {
            w.home.join(".claude.lock")
        } else {
            mkdir(&w.shared, 0o755);
            let mut s = w.config.clone().into_os_string();
            s.push(".lock");
            PathBuf::from(s)
        };
        mkdir(&lock, 0o755);
        let before = w.manifest();
        let (code, doc) = run_json(w.cmd().args(["--yes", "--json"]));
        assert_refused(&w, &before, &doc, code, "agent-running", which);
        let msg = doc["error"]["message"].as_str().unwrap();
        assert!(msg.contains(".lock"), "{which}: {msg}");

        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        set_mtime(&lock, now - 600, 0);
        let (code, doc) = run_json(w.cmd().args(["--yes", "--json"]));
        assert_eq!(doc["changed"], true, "{which}: stale lock: {doc:#}");
        assert_eq!(doc["error"], Value::Null, "{which}: stale lock: {doc:#}");
        if which == "home" {
            assert_eq!(code, 0, "{which}: stale lock: {doc:#}");
        } else {
            // Migrated; verify then reports the stale lock next to the config dir (exit 5)
            // with the command that removes it.
            assert_eq!(code, 5, "{which}: stale lock: {doc:#}");
            assert_eq!(doc["problems"][0]["kind"], "stale-lock", "{doc:#}");
        }
    }
}

/// undo is refused the same way while an agent runs.
#[test]
fn undo_is_refused_while_an_agent_runs() {
    let w = World::realistic();
    let (code, doc) = run_json(w.cmd().args(["--yes", "--json"]));
    assert_eq!(code, 0, "{doc:#}");
    let f = fs::File::open(w.config.join("session.lock")).unwrap();
    let held = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)
        .expect("flock");
    let mid = w.manifest();
    let (code, doc) = run_json(w.cmd_sub("undo").args(["--yes", "--json"]));
    drop(held);
    assert_eq!(code, 3, "{doc:#}");
    assert_eq!(doc["error"]["kind"], "agent-running", "{doc:#}");
    assert_same(&mid, &w.manifest(), "undo refused");
}

// ---------------------------------------------------------------------------------------------
// Two migrations at once
// ---------------------------------------------------------------------------------------------

#[test]
fn two_migrations_at_once_one_wins() {
    let Some(w) = World::realistic_cross_device() else {
        return;
    };
    build_many_files(&w.claude().join("projects/-home-user-src-big"), 3000);
    let claude_before = manifest(&w.claude());
    let json_before = fs::read(w.claude_json()).unwrap();
    let spawn = || {
        w.cmd()
            .args(["--yes", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let results: Vec<(i32, Value)> = [a, b]
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                panic!(
                    "{e}: {}\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                )
            });
            (out.status.code().expect("no signal"), doc)
        })
        .collect();
    let codes: Vec<i32> = results.iter().map(|r| r.0).collect();
    let mut sorted = codes.clone();
    sorted.sort();
    assert_eq!(sorted, vec![0, 3], "{results:#?}");
    let loser = results.iter().find(|r| r.0 == 3).unwrap();
    assert_eq!(loser.1["error"]["kind"], "already-running", "{:#}", loser.1);
    assert_eq!(loser.1["changed"], false);
    assert_migrated(&w, &claude_before, &json_before, "the winner's migration");
}

/// The two home-level commands that change things take the same lock: an undo started while a
/// migration runs is refused too.
#[test]
fn undo_during_a_migration_is_refused() {
    let Some(w) = World::cross_device() else {
        return;
    };
    build_realistic_home(&w.home);
    build_many_files(&w.claude().join("projects/-home-user-src-big"), 3000);
    let claude_before = manifest(&w.claude());
    let json_before = fs::read(w.claude_json()).unwrap();
    write_env_file(&w.env_file);
    write_bashrc(&w.profile);
    if !have_strace() {
        skip!("strace is not installed (apt-get install strace)");
    }
    let journal = state_dir(&w).join("journal.json");
    // The run stops after each rename it makes (strace injects SIGSTOP): at the first stop
    // that finds the journal in place, the migration holds its lock and stands still while
    // the undo tries.
    let mut refused = None;
    let (status, stdout, stderr) = run_pausing_after(
        w.cmd().args(["--yes", "--json"]),
        &["rename", "renameat", "renameat2"],
        || {
            if refused.is_none() && exists(&journal) {
                refused = Some(run_json(w.cmd_sub("undo").args(["--yes", "--json"])));
            }
        },
    );
    assert_eq!(status.code(), Some(0), "{stdout}\n{stderr}");
    let (code, doc) = refused.expect("the run never wrote its journal");
    assert_eq!(code, 3, "{doc:#}");
    assert_eq!(doc["error"]["kind"], "already-running", "{doc:#}");
    assert_migrated(
        &w,
        &claude_before,
        &json_before,
        "migration next to a refused undo",
    );
}

// ---------------------------------------------------------------------------------------------
// Run as root for another user's home
// ---------------------------------------------------------------------------------------------

const OWNER: u32 = 4242;

fn owner_of(p: &Path) -> (u32, u32) {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
    (m.uid(), m.gid())
}

fn root_for_another_user(cross: bool) {
    if !is_root() {
        skip!("acting for another user needs root");
    }
    let w = if cross {
        let Some(w) = World::realistic_cross_device() else {
            return;
        };
        w
    } else {
        World::realistic()
    };
    chown_r(&w.home, OWNER, OWNER);
    // Files of other owners inside ~/.claude keep their owners.
    let odd = w.claude().join("plugins/config.json");
    std::os::unix::fs::lchown(&odd, Some(0), Some(0)).unwrap();
    let other = w.claude().join("agents/reviewer.md");
    std::os::unix::fs::lchown(&other, Some(4343), Some(4344)).unwrap();
    let dangling = w.home.join(bpath(DANGLING_LINK));
    std::os::unix::fs::lchown(&dangling, Some(4343), Some(4343)).unwrap();
    let before = w.manifest();
    let claude_before = manifest(&w.claude());
    let json_before = fs::read(w.claude_json()).unwrap();

    let (code, doc) = run_json(w.cmd().args(["--yes", "--json"]));
    let what = format!("root for uid {OWNER} (cross-device: {cross})");
    assert_eq!(code, 0, "{what}: {doc:#}");
    // Every byte, mode, time and owner of ~/.claude is in the config dir.
    assert_migrated(&w, &claude_before, &json_before, &what);
    let o = (OWNER, OWNER);
    assert_eq!(owner_of(&w.config), o, "{what}: config dir");
    assert_eq!(owner_of(&w.config.join(".claude.json")), o, "{what}");
    assert_eq!(owner_of(&w.config.join("plugins/config.json")), (0, 0));
    assert_eq!(owner_of(&w.config.join("agents/reviewer.md")), (4343, 4344));
    assert_eq!(owner_of(&w.config.join("todos/latest.json")), (4343, 4343));
    assert_eq!(owner_of(&w.claude()), o, "{what}: ~/.claude link");
    assert_eq!(owner_of(&w.claude_json()), o, "{what}: ~/.claude.json link");
    assert_eq!(owner_of(&w.profile), o, "{what}: rewritten rc file");
    assert_eq!(
        owner_of(&w.env_file),
        (0, 0),
        "{what}: env file keeps its owner"
    );
    for d in [
        ".local",
        ".local/state",
        ".local/state/disinto",
        ".local/state/disinto/claude-init",
    ] {
        assert_eq!(owner_of(&w.home.join(d)), o, "{what}: {d}");
    }
    // The journal of a root run stays root's (issue 10): the home's owner must not be able to
    // rewrite what root will act on, nor read the previous bytes of root's env file.
    assert_eq!(
        owner_of(&state_dir(&w).join("journal.json")),
        (0, 0),
        "{what}: journal"
    );
    assert_eq!(mode_of(&state_dir(&w)), 0o700, "{what}");
    assert_eq!(
        mode_of(&state_dir(&w).join("journal.json")),
        0o600,
        "{what}"
    );
    // The shared dir the tool created is the owner's and traversable.
    assert_eq!(owner_of(&w.shared), o, "{what}: shared dir");
    // And undo gives back exactly what was there, owners included.
    let (code, doc) = run_json(w.cmd_sub("undo").args(["--yes", "--json"]));
    assert_eq!(code, 0, "{what}: undo: {doc:#}");
    assert_same(&before, &w.manifest(), &format!("{what}: undo"));
}

#[test]
fn root_acting_for_another_user_same_filesystem() {
    root_for_another_user(false);
}

#[test]
fn root_acting_for_another_user_cross_device() {
    root_for_another_user(true);
}
