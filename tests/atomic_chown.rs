//! `atomic::write_file_atomic` when its `fchown` fails: an error, the target untouched, no temp
//! file left. Only an unprivileged user can fail a chown, so as root (CI's normal case) the test
//! re-runs itself as uid/gid 65534 through `setpriv` instead of skipping.
//!
//! `atomic` is private to the crate, and depends on nothing of it but `safefs` (which depends on
//! nothing): the two modules are compiled in here from their source (their own unit tests come
//! with them and run here too).

mod common;

#[path = "../src/atomic.rs"]
#[allow(dead_code)]
mod atomic;
#[path = "../src/safefs.rs"]
#[allow(dead_code)]
mod safefs;

use atomic::write_file_atomic;
use common::*;
use std::ffi::OsString;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};

const NOBODY: u32 = 65534;
/// Set in the re-run: the directory (owned by the unprivileged user) to work in.
const CHILD_DIR: &str = "DCI_ATOMIC_CHOWN_DIR";

fn entries(dir: &Path) -> Vec<OsString> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    v.sort();
    v
}

/// The test proper, as a user who cannot chown to root.
fn chown_to_root_fails(dir: &Path) {
    assert_ne!(nix::unistd::geteuid().as_raw(), 0, "must run unprivileged");
    let p = dir.join("f");
    std::fs::write(&p, b"keep").unwrap();
    let before = manifest(dir);
    let err = write_file_atomic(&p, b"new", 0o600, Some((0, 0))).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert_eq!(std::fs::read(&p).unwrap(), b"keep");
    assert_eq!(
        entries(dir),
        vec![OsString::from("f")],
        "a temp file was left"
    );
    // The directory's mtime moves (a temp file came and went); nothing else may.
    assert_same_except(
        &before,
        &manifest(dir),
        Ignore {
            dir_mtime: true,
            ..Default::default()
        },
        "failed chown",
    );
}

#[test]
fn chown_failure_is_an_error_and_leaves_nothing() {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        chown_to_root_fails(Path::new(&dir));
        return;
    }
    if !is_root() {
        let t = tempfile::tempdir().unwrap();
        chown_to_root_fails(t.path());
        return;
    }
    // Root: the same test, in this same test binary, as uid 65534.
    let t = tempfile::tempdir().unwrap();
    set_mode(t.path(), 0o755);
    let dir = t.path().join("nobody");
    mkdir(&dir, 0o700);
    nix::unistd::chown(
        &dir,
        Some(nix::unistd::Uid::from_raw(NOBODY)),
        Some(nix::unistd::Gid::from_raw(NOBODY)),
    )
    .unwrap();
    let me = std::env::current_exe().unwrap();
    let out = Command::new("setpriv")
        .arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .args(["--clear-groups", "--"])
        .arg(&me)
        .args([
            "--exact",
            "chown_failure_is_an_error_and_leaves_nothing",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, &dir)
        .stdin(Stdio::null())
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => skip!("cannot run setpriv: {e} (apt-get install util-linux)"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.contains("Permission denied") && !stdout.contains("test ") {
        skip!(
            "uid {NOBODY} cannot execute {} (a parent directory is not traversable): {stderr}",
            me.display()
        );
    }
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "as uid {NOBODY}: {}\n{stdout}\n{stderr}",
        out.status
    );
    // The re-run really ran as the unprivileged user: the file it wrote is theirs.
    assert_eq!(std::fs::metadata(dir.join("f")).unwrap().uid(), NOBODY);
}
