//! `copy_tree_verified` and `copy_file_verified`: across filesystems, onto a full disk, with a
//! source that changes under the copy, with device nodes.

use super::*;

#[test]
fn copy_within_tmp() {
    copy_and_check("/tmp", "/tmp");
}

#[test]
fn copy_tmp_to_dev_shm() {
    let s = tmp_in("/tmp");
    assert!(
        !same_filesystem(s.path(), Path::new("/dev/shm")).unwrap(),
        "test needs two filesystems"
    );
    copy_and_check("/tmp", "/dev/shm");
}

#[test]
fn copy_refuses_existing_destination_and_symlink_source() {
    let s = tmp_in("/tmp");
    let src = s.path().join("src");
    mkdir(&src, 0o700);
    write(&src.join("f"), b"x", 0o600);
    let dst = s.path().join("dst");
    mkdir(&dst, 0o700);
    let e = copy_tree_verified(&src, &dst, &opts(), &|_, _| {}).unwrap_err();
    assert!(matches!(e, FsError::DestinationExists { .. }), "{e}");
    assert!(e.to_string().contains("already exists"));
    let link = s.path().join("link");
    symlink(&src, &link).unwrap();
    let e = copy_tree_verified(&link, &s.path().join("d2"), &opts(), &|_, _| {}).unwrap_err();
    assert!(matches!(e, FsError::NotADirectory { .. }), "{e}");
    let e = copy_tree_verified(&src, &s.path().join("no/parent"), &opts(), &|_, _| {}).unwrap_err();
    assert!(matches!(e, FsError::Io { .. }), "{e}");
    assert!(!s.path().join("d2").exists());
}

/// Unmounts on drop so a failing assertion does not leave a mount behind.
struct Mount(PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn disk_full_fails_and_leaves_source_alone() {
    let (s, src) = nasty_tree();
    let mnt = s.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "none"])
        .arg(&mnt)
        .status()
        .map(|st| st.success())
        .unwrap_or(false);
    if !ok {
        eprintln!(
            "SKIPPED disk_full_fails_and_leaves_source_alone: cannot mount tmpfs (not root?)"
        );
        return;
    }
    let _guard = Mount(mnt.clone());
    let before = manifest(&src).unwrap();
    let (free, _) = free_space(&mnt.join("config")).unwrap();
    assert!(free <= 1024 * 1024);
    assert!(tree_stats(&src).unwrap().bytes > free);
    let e = copy_tree_verified(&src, &mnt.join("config"), &opts(), &|_, _| {}).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(&e, FsError::Io { source, .. } if source.raw_os_error() == Some(nix::libc::ENOSPC)),
        "{msg}"
    );
    assert!(msg.contains("free space"), "{msg}");
    assert_eq!(
        diff(&before, &manifest(&src).unwrap()),
        Vec::<String>::new()
    );
    remove_tree(&mnt.join("config")).unwrap();
    assert_eq!(fs::read_dir(&mnt).unwrap().count(), 0);
}

#[test]
fn source_modified_during_copy_is_detected() {
    let (s, src) = nasty_tree();
    let dst = s.path().join("copy");
    let done = AtomicBool::new(false);
    let target = src.join("settings.json");
    let e = copy_tree_verified(&src, &dst, &opts(), &|_, _| {
        if !done.swap(true, Ordering::SeqCst) {
            let mut f = OpenOptions::new().append(true).open(&target).unwrap();
            f.write_all(b"more").unwrap();
        }
    })
    .unwrap_err();
    assert!(matches!(&e, FsError::SourceChanged { .. }), "{e}");
    assert!(e.to_string().contains("settings.json"), "{e}");
}

#[test]
fn copy_single_file_across_filesystems() {
    let s = tmp_in("/tmp");
    let d = tmp_in("/dev/shm");
    let src = s.path().join(".claude.json");
    write(&src, &noise(300_000, 3), 0o600);
    set_mtime(&src, 1_700_000_000, 987_654_321);
    let dst = d.path().join(".claude.json");
    copy_file_verified(&src, &dst, &opts()).unwrap();
    assert_eq!(fs::read(&src).unwrap(), fs::read(&dst).unwrap());
    let m = lmeta(&dst);
    assert_eq!(m.mode() & 0o7777, 0o600);
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_700_000_000, 987_654_321));
    let e = copy_file_verified(&src, &dst, &opts()).unwrap_err();
    assert!(matches!(e, FsError::DestinationExists { .. }), "{e}");
    let e = copy_file_verified(s.path(), &d.path().join("x"), &opts()).unwrap_err();
    assert!(matches!(e, FsError::NotAFile { .. }), "{e}");
}

#[test]
fn device_nodes_copied_as_root() {
    let s = tmp_in("/tmp");
    let src = s.path().join("src");
    mkdir(&src, 0o755);
    let dev = nix::sys::stat::makedev(1, 3);
    if nix::sys::stat::mknod(
        &src.join("null"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        dev,
    )
    .is_err()
    {
        eprintln!("SKIPPED device_nodes_copied_as_root: mknod not permitted here");
        return;
    }
    let dst = tmp_in("/dev/shm");
    let dst = dst.path().join("copy");
    copy_tree_verified(&src, &dst, &opts(), &|_, _| {}).unwrap();
    assert_eq!(lmeta(&dst.join("null")).rdev(), dev);
}
