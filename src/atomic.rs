//! Crash-safe file replacement.
//!
//! The tool rewrites files a user cannot afford to lose half of: the factory's `.env` (secrets,
//! mode 0600), shell rc files and its own journal. A plain `write` that is interrupted (full disk,
//! power loss, SIGKILL) leaves a truncated file behind; here the new bytes go to a temp file in the
//! same directory first and only a `rename(2)` (atomic within one filesystem) makes them visible,
//! so readers see either the old file or the complete new one, never a mix.

use std::ffi::OsString;
use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

/// Write `bytes` to `path` atomically, with exactly `mode` and, when `owner` is `Some((uid,
/// gid))`, that owner.
///
/// Steps: create `.<file name>.dci-tmp-<pid>` in the same directory (same filesystem, so the final
/// rename is atomic; created 0600 so secrets are never readable by others, even for a moment),
/// write, `fchown` (when asked), `fchmod` (after `fchown`, because a chown may clear set-id bits,
/// and `fchmod` is not subject to the umask so the mode is exact), `fsync` the data, rename over
/// `path`, then `fsync` the directory so the rename itself survives a crash.
///
/// Errors are propagated, `fchown` failures included: silently leaving a file owned by root in a
/// user's home is exactly the kind of damage this tool must not do. If anything fails before the
/// rename takes effect, the temp file is removed and `path` is untouched.
///
/// If `path` is a symlink, the link itself is replaced by a regular file (rename does not follow
/// links); callers that want to write through a link must resolve it first.
pub fn write_file_atomic(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "cannot write {}: the path has no file name component",
                path.display()
            ),
        )
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };

    let mut tmp_name = OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!("{TMP_TAG}{}", std::process::id()));
    let tmp_path = dir.join(&tmp_name);

    let file = create_exclusive(&tmp_path)?;
    // From here on, any early return removes the temp file.
    let mut guard = TempGuard(Some(tmp_path.clone()));

    fill(file, bytes, mode, owner)?;
    std::fs::rename(&tmp_path, path)?;
    guard.0 = None; // renamed: nothing left to clean up

    sync_dir(dir)
}

/// Create the temp file with `O_CREAT | O_EXCL` (which never follows a symlink planted at that
/// name). A leftover of the same name can only come from an earlier run that had our pid and
/// died before cleaning up: remove it once and retry, rather than fail forever on that path.
fn create_exclusive(tmp_path: &Path) -> io::Result<File> {
    let open = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(tmp_path)
    };
    match open() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(tmp_path)?;
            open()
        }
        other => other,
    }
}

fn fill(mut file: File, bytes: &[u8], mode: u32, owner: Option<(u32, u32)>) -> io::Result<()> {
    file.write_all(bytes)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
    }
    file.set_permissions(Permissions::from_mode(mode))?;
    file.sync_all()
}

/// Removes the temp file on drop unless disarmed (set to `None`) after a successful rename.
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            // Best effort: the original error is the one worth reporting.
            let _ = std::fs::remove_file(p);
        }
    }
}

/// `fsync` a directory, so that entries created, renamed or removed in it are durable.
///
/// Without it a crash right after a rename can bring back the old name on some filesystems,
/// which for a migration means a journal that disagrees with the disk.
///
/// The OS error is returned unwrapped (ENOTDIR, ENOENT...) so callers can match on it and add
/// their own context.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    let d = OpenOptions::new()
        .read(true)
        .custom_flags(OFlag::O_DIRECTORY.bits())
        .open(dir)?;
    d.sync_all()
}

/// The tag of an atomic write's temp file: `.<name>.dci-tmp-<pid>` (see [`write_file_atomic`]).
const TMP_TAG: &str = ".dci-tmp-";
/// The tag of an atomic symlink's temp name: `.<name>.symlink-<pid>-<n>` (see [`temp_sibling`]).
const SYMLINK_TAG: &str = "symlink";

/// A name in `path`'s directory that nothing else uses, for building something before renaming
/// it into place: `.<name>.<tag>-<pid>-<n>`.
pub(crate) fn temp_sibling(path: &Path, tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = parent_or_dot(path);
    let mut name = OsString::from(".");
    name.push(path.file_name().unwrap_or(std::ffi::OsStr::new("x")));
    name.push(format!(
        ".{tag}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    dir.join(name)
}

/// The temp name of an atomic symlink (see `fsops::atomic_symlink`).
pub(crate) fn symlink_temp(link: &Path) -> PathBuf {
    temp_sibling(link, SYMLINK_TAG)
}

fn parent_or_dot(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Whether process `pid` may still be running (it is us, it answers signal 0, or `/proc` has
/// it). A temp name is only ever removed when this says no: a SIGKILL runs no cleanup, and a
/// live run's temp file is its business.
pub(crate) fn pid_alive(pid: i32) -> bool {
    pid == std::process::id() as i32
        || nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
        || Path::new(&format!("/proc/{pid}")).exists()
}

/// The pid in `digits`, if it is one (non-empty, ASCII digits only).
pub(crate) fn parse_pid(digits: &[u8]) -> Option<i32> {
    std::str::from_utf8(digits)
        .ok()
        .filter(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
        .and_then(|p| p.parse::<i32>().ok())
}

/// Remove what a killed run of this tool can leave next to `path`: the temp file of an atomic
/// write (`.<name>.dci-tmp-<pid>`, see [`write_file_atomic`]) or of an atomic symlink
/// (`.<name>.symlink-<pid>-<n>`, see [`symlink_temp`]), but only when process `<pid>` is gone
/// (a SIGKILL runs no cleanup). Best effort: any error is ignored.
pub(crate) fn remove_stale_temps(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let (Some(_), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    // Listed and removed through the directory's descriptor, opened without following a link
    // its owner put on the way (the home, as root: issue 10).
    let Ok(dir) = crate::safefs::open_fixed(parent_or_dot(path)) else {
        return;
    };
    let Ok(names) = dir.names() else {
        return;
    };
    let mut prefix = b".".to_vec();
    prefix.extend_from_slice(name.as_bytes());
    let symlink_tag = format!(".{SYMLINK_TAG}-");
    for n in names {
        let Some(rest) = n.as_bytes().strip_prefix(&prefix[..]) else {
            continue;
        };
        let pid = if let Some(p) = rest.strip_prefix(TMP_TAG.as_bytes()) {
            p
        } else if let Some(p) = rest.strip_prefix(symlink_tag.as_bytes()) {
            match p.iter().position(|&c| c == b'-') {
                Some(i) if p[i + 1..].iter().all(u8::is_ascii_digit) && i + 1 < p.len() => &p[..i],
                _ => continue,
            }
        } else {
            continue;
        };
        let Some(pid) = parse_pid(pid) else {
            continue;
        };
        if pid_alive(pid) {
            continue;
        }
        let is_dir =
            |st: nix::sys::stat::FileStat| st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFDIR;
        if dir
            .lstat(&n)
            .is_ok_and(|st| st.is_some_and(|st| !is_dir(st)))
        {
            let _ = dir.unlink(&n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn entries(dir: &Path) -> Vec<OsString> {
        let mut v: Vec<OsString> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn writes_new_file_with_exact_bytes_and_no_leftovers() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join(".env");
        write_file_atomic(&p, b"A=1\r\nB='x y'\n\x00\xff", 0o600, None).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"A=1\r\nB='x y'\n\x00\xff");
        assert_eq!(entries(t.path()), vec![OsString::from(".env")]);
    }

    #[test]
    fn mode_is_exact_regardless_of_umask() {
        // The umask is process-wide, so instead of changing it (racing other tests) use modes a
        // usual umask (022 or 077) would have stripped.
        let t = tempfile::tempdir().unwrap();
        for mode in [0o777, 0o666, 0o640, 0o600, 0o400, 0o2755] {
            let p = t.path().join(format!("f{mode:o}"));
            write_file_atomic(&p, b"x", mode, None).unwrap();
            let got = std::fs::metadata(&p).unwrap().mode() & 0o7777;
            assert_eq!(got, mode, "mode {mode:o} came out as {got:o}");
        }
    }

    #[test]
    fn replaces_existing_file_by_rename_not_in_place() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("rc");
        std::fs::write(&p, b"old contents that are longer").unwrap();
        // A hard link keeps the old inode reachable: an in-place write would change it too.
        let link = t.path().join("hardlink");
        std::fs::hard_link(&p, &link).unwrap();
        let old_ino = std::fs::metadata(&p).unwrap().ino();

        write_file_atomic(&p, b"new", 0o644, None).unwrap();

        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(
            std::fs::read(&link).unwrap(),
            b"old contents that are longer"
        );
        assert_ne!(std::fs::metadata(&p).unwrap().ino(), old_ino);
        assert_eq!(
            entries(t.path()),
            vec![OsString::from("hardlink"), OsString::from("rc")]
        );
    }

    #[test]
    fn owner_is_applied() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("owned");
        let me = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        let (uid, gid) = if me.0 == 0 { (4242, 4343) } else { me };
        write_file_atomic(&p, b"x", 0o4750, Some((uid, gid))).unwrap();
        let md = std::fs::metadata(&p).unwrap();
        assert_eq!((md.uid(), md.gid()), (uid, gid));
        // chown runs before chmod, so the set-id bit asked for survives.
        assert_eq!(md.mode() & 0o7777, 0o4750);
    }

    #[test]
    fn chown_failure_is_an_error_and_leaves_nothing() {
        if nix::unistd::getuid().is_root() {
            eprintln!("skip: running as root, chown to another user cannot fail");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        std::fs::write(&p, b"keep").unwrap();
        let err = write_file_atomic(&p, b"new", 0o600, Some((0, 0))).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(std::fs::read(&p).unwrap(), b"keep");
        assert_eq!(entries(t.path()), vec![OsString::from("f")]);
    }

    #[test]
    fn failed_rename_removes_temp_and_keeps_target() {
        let t = tempfile::tempdir().unwrap();
        // A non-empty directory cannot be replaced by a file: the rename fails.
        let p = t.path().join("target");
        std::fs::create_dir(&p).unwrap();
        std::fs::write(p.join("inside"), b"data").unwrap();
        assert!(write_file_atomic(&p, b"new", 0o600, None).is_err());
        assert_eq!(entries(t.path()), vec![OsString::from("target")]);
        assert_eq!(std::fs::read(p.join("inside")).unwrap(), b"data");
    }

    #[test]
    fn stale_temp_from_a_dead_run_is_replaced() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("x");
        let stale = t.path().join(format!(".x.dci-tmp-{}", std::process::id()));
        std::fs::write(&stale, b"stale").unwrap();
        write_file_atomic(&p, b"fresh", 0o600, None).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"fresh");
        assert!(!stale.exists());
    }

    #[test]
    fn temp_name_is_dot_name_dci_tmp_pid_in_same_dir() {
        // Plant a symlink at the exact temp name, pointing at a victim: the write must use that
        // name (the link is gone afterwards), must not follow it (the victim is untouched).
        let t = tempfile::tempdir().unwrap();
        let victim = t.path().join("victim");
        std::fs::write(&victim, b"victim").unwrap();
        let tmp = t
            .path()
            .join(format!(".cfg.dci-tmp-{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        write_file_atomic(&t.path().join("cfg"), b"cfg", 0o600, None).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"victim");
        assert_eq!(std::fs::read(t.path().join("cfg")).unwrap(), b"cfg");
        assert!(std::fs::symlink_metadata(&tmp).is_err());
    }

    #[test]
    fn non_utf8_file_name() {
        use std::os::unix::ffi::OsStrExt;
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join(std::ffi::OsStr::from_bytes(b"n\xffme \xc3("));
        write_file_atomic(&p, b"ok", 0o600, None).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"ok");
        assert_eq!(entries(t.path()).len(), 1);
    }

    #[test]
    fn missing_parent_is_not_found() {
        let t = tempfile::tempdir().unwrap();
        let err = write_file_atomic(&t.path().join("no/such/file"), b"x", 0o600, None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(entries(t.path()).is_empty());
    }

    #[test]
    fn path_without_file_name_is_invalid_input() {
        let err = write_file_atomic(Path::new("/"), b"x", 0o600, None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn sync_dir_accepts_dirs_and_rejects_files() {
        let t = tempfile::tempdir().unwrap();
        sync_dir(t.path()).unwrap();
        let f = t.path().join("f");
        std::fs::write(&f, b"").unwrap();
        let err = sync_dir(&f).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(nix::libc::ENOTDIR));
        assert!(sync_dir(&t.path().join("missing")).is_err());
    }
}
