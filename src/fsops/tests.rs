use super::*;
use std::os::unix::fs::{symlink, FileTypeExt, PermissionsExt};
use std::process::Command;

fn set_mtime(p: &Path, sec: i64, nsec: i64) {
    nix::sys::stat::utimensat(
        None,
        p,
        &TimeSpec::new(sec, nsec),
        &TimeSpec::new(sec, nsec),
        UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

fn write(p: &Path, data: &[u8], mode: u32) {
    fs::write(p, data).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn mkdir(p: &Path, mode: u32) {
    fs::create_dir_all(p).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// Pseudo-random bytes (xorshift), so that content differences are not hidden by repetition.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A tree with everything that has broken naive copies: see the module brief.
fn build_nasty(root: &Path, outside: &Path) {
    mkdir(root, 0o700);
    mkdir(outside, 0o755);
    write(&outside.join("outside.md"), b"outside", 0o644);
    write(
        &root.join(".credentials.json"),
        b"{\"token\":\"secret\"}",
        0o600,
    );
    write(&root.join("settings.json"), b"{}\n", 0o644);
    mkdir(&root.join("projects"), 0o700);
    mkdir(&root.join("projects/-home-u-repo"), 0o755);
    write(
        &root.join("projects/-home-u-repo/0001.jsonl"),
        b"{\"a\":1}\n",
        0o644,
    );
    mkdir(&root.join("local/node_modules/pkg"), 0o755);
    mkdir(&root.join("local/node_modules/.bin"), 0o755);
    write(
        &root.join("local/node_modules/pkg/bin.js"),
        b"#!/usr/bin/env node\n",
        0o755,
    );
    symlink("../pkg/bin.js", root.join("local/node_modules/.bin/x")).unwrap();
    symlink(outside, root.join("commands")).unwrap();
    symlink("/nonexistent/dangling/target", root.join("dangling")).unwrap();
    write(&root.join("new\nline"), b"newline name", 0o644);
    write(
        &root.join(OsStr::from_bytes(b"bad\xff")),
        b"non-utf8 name",
        0o640,
    );
    write(&root.join("with spaces.txt"), b"spaces", 0o644);
    mkdir(&root.join("links"), 0o755);
    write(&root.join("links/one"), b"hard linked", 0o644);
    fs::hard_link(root.join("links/one"), root.join("hard two")).unwrap();
    nix::unistd::mkfifo(&root.join("fifo"), Mode::from_bits_truncate(0o620)).unwrap();
    write(&root.join("empty"), b"", 0o600);
    write(&root.join("big.bin"), &noise(5 * 1024 * 1024, 7), 0o644);
    write(&root.join("setuid-exe"), b"#!/bin/sh\n", 0o4755);
    mkdir(&root.join("gdir"), 0o2775);
    write(&root.join("gdir/inner"), b"in setgid dir", 0o664);
    mkdir(&root.join("sticky"), 0o1777);
    let _sock = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
    // Distinct nanosecond mtimes on everything, deepest first so dirs keep theirs.
    fn contents_first(p: &Path, out: &mut Vec<PathBuf>) {
        if fs::symlink_metadata(p).unwrap().is_dir() {
            for e in fs::read_dir(p).unwrap() {
                contents_first(&e.unwrap().path(), out);
            }
        }
        out.push(p.to_path_buf());
    }
    let mut all = Vec::new();
    contents_first(root, &mut all);
    for (i, p) in all.iter().enumerate() {
        set_mtime(p, 1_600_000_000 + i as i64, 100_000_000 + i as i64 * 7919);
    }
}

fn tmp_in(dir: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("fsops-test")
        .tempdir_in(dir)
        .unwrap()
}

fn opts() -> CopyOptions {
    CopyOptions {
        preserve_owner: is_root(),
    }
}

fn lmeta(p: &Path) -> fs::Metadata {
    fs::symlink_metadata(p).unwrap()
}

/// Checks independent of `manifest`/`diff`, straight from lstat.
fn independent_checks(src: &Path, dst: &Path) {
    for rel in [
        ".credentials.json",
        "big.bin",
        "empty",
        "setuid-exe",
        "gdir",
        "sticky",
        "projects",
        "fifo",
        "sock",
        "dangling",
        "commands",
    ] {
        let (a, b) = (lmeta(&src.join(rel)), lmeta(&dst.join(rel)));
        assert_eq!(a.mode(), b.mode(), "{rel}: mode incl. type");
        if !a.is_dir() {
            assert_eq!(a.size(), b.size(), "{rel}: size");
        }
        assert_eq!(
            (a.mtime(), a.mtime_nsec()),
            (b.mtime(), b.mtime_nsec()),
            "{rel}: mtime"
        );
        if is_root() {
            assert_eq!((a.uid(), a.gid()), (b.uid(), b.gid()), "{rel}: owner");
        }
    }
    let (a, b) = (lmeta(src), lmeta(dst));
    assert_eq!(a.mode(), b.mode(), "top dir mode");
    assert_eq!((a.mtime(), a.mtime_nsec()), (b.mtime(), b.mtime_nsec()));
    assert_eq!(lmeta(&dst.join(".credentials.json")).mode() & 0o7777, 0o600);
    assert_eq!(lmeta(&dst.join("gdir")).mode() & 0o7777, 0o2775);
    assert_eq!(lmeta(&dst.join("setuid-exe")).mode() & 0o7777, 0o4755);
    assert!(lmeta(&dst.join("fifo")).file_type().is_fifo());
    assert!(lmeta(&dst.join("sock")).file_type().is_socket());
    assert_eq!(
        fs::read_link(dst.join("local/node_modules/.bin/x")).unwrap(),
        PathBuf::from("../pkg/bin.js")
    );
    assert_eq!(
        fs::read(dst.join("local/node_modules/.bin/x")).unwrap(),
        b"#!/usr/bin/env node\n"
    );
    assert_eq!(
        fs::read_link(dst.join("commands")).unwrap(),
        fs::read_link(src.join("commands")).unwrap()
    );
    assert_eq!(
        fs::read_link(dst.join("dangling")).unwrap(),
        PathBuf::from("/nonexistent/dangling/target")
    );
    assert_eq!(fs::read(dst.join("new\nline")).unwrap(), b"newline name");
    assert_eq!(
        fs::read(dst.join(OsStr::from_bytes(b"bad\xff"))).unwrap(),
        b"non-utf8 name"
    );
    assert_eq!(fs::read(dst.join("with spaces.txt")).unwrap(), b"spaces");
    assert_eq!(
        fs::read(dst.join("big.bin")).unwrap(),
        fs::read(src.join("big.bin")).unwrap()
    );
    let (h1, h2) = (lmeta(&dst.join("links/one")), lmeta(&dst.join("hard two")));
    assert_eq!(h1.ino(), h2.ino(), "hard link kept");
    assert_eq!(h1.nlink(), 2);
    assert_ne!(
        lmeta(&dst.join("big.bin")).ino(),
        lmeta(&src.join("big.bin")).ino()
    );
}

fn copy_and_check(src_parent: &str, dst_parent: &str) {
    let s = tmp_in(src_parent);
    let d = tmp_in(dst_parent);
    let src = s.path().join("claude");
    build_nasty(&src, &s.path().join("dotfiles"));
    let before = manifest(&src).unwrap();
    let dst = d.path().join("config");
    let calls = AtomicU64::new(0);
    let st = copy_tree_verified(&src, &dst, &opts(), &|_, _| {
        calls.fetch_add(1, Ordering::Relaxed);
    })
    .unwrap();
    assert!(calls.load(Ordering::Relaxed) >= 1);
    assert_eq!(st.files, 13);
    assert_eq!(st.symlinks, 3);
    assert_eq!(st.bytes, lmeta(&src.join("big.bin")).size() + 114);
    let after = manifest(&dst).unwrap();
    assert_eq!(diff(&before, &after), Vec::<String>::new());
    assert_eq!(before, after);
    assert_eq!(
        diff(&before, &manifest(&src).unwrap()),
        Vec::<String>::new()
    );
    assert!(after.entries[Path::new("hard two")].ino_group.is_some());
    assert_eq!(
        after.entries[Path::new("hard two")].ino_group,
        after.entries[Path::new("links/one")].ino_group
    );
    independent_checks(&src, &dst);
}

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
    let s = tmp_in("/tmp");
    let src = s.path().join("claude");
    build_nasty(&src, &s.path().join("dotfiles"));
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
fn verify_catches_corruption_with_same_size_and_mtime() {
    let s = tmp_in("/tmp");
    let src = s.path().join("claude");
    build_nasty(&src, &s.path().join("dotfiles"));
    let dst = s.path().join("copy");
    copy_tree_verified(&src, &dst, &opts(), &|_, _| {}).unwrap();
    verify_trees(&src, &dst, is_root()).unwrap();

    let big = dst.join("big.bin");
    let m = lmeta(&big);
    let mut data = fs::read(&big).unwrap();
    data[3 * 1024 * 1024] ^= 1;
    fs::write(&big, &data).unwrap();
    set_mtime(&big, m.mtime(), m.mtime_nsec());
    let e = verify_trees(&src, &dst, is_root()).unwrap_err();
    assert!(matches!(&e, FsError::VerifyMismatch { .. }), "{e}");
    assert!(
        e.to_string().contains("\"big.bin\": content differs"),
        "{e}"
    );

    // Metadata-only corruption is caught too.
    data[3 * 1024 * 1024] ^= 1;
    fs::write(&big, &data).unwrap();
    set_mtime(&big, m.mtime(), m.mtime_nsec());
    verify_trees(&src, &dst, is_root()).unwrap();
    fs::set_permissions(
        dst.join(".credentials.json"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let e = verify_trees(&src, &dst, is_root()).unwrap_err();
    assert!(e.to_string().contains("mode 0600 != 0644"), "{e}");
}

#[test]
fn verify_reports_missing_and_extra_entries_and_subtrees() {
    let s = tmp_in("/tmp");
    let src = s.path().join("claude");
    build_nasty(&src, &s.path().join("dotfiles"));
    let dst = s.path().join("copy");
    copy_tree_verified(&src, &dst, &opts(), &|_, _| {}).unwrap();
    fs::remove_file(dst.join("projects/-home-u-repo/0001.jsonl")).unwrap();
    write(&dst.join("projects/-home-u-repo/0002.jsonl"), b"x", 0o644);
    remove_tree(&dst.join("local")).unwrap();
    mkdir(&dst.join("zz-extra/deeper"), 0o755);
    let e = verify_trees(&src, &dst, is_root()).unwrap_err().to_string();
    for want in [
        "\"projects/-home-u-repo/0001.jsonl\": only in the first tree",
        "\"projects/-home-u-repo/0002.jsonl\": only in the second tree",
        "\"local\": only in the first tree",
        "\"zz-extra\": only in the second tree",
    ] {
        assert!(e.contains(want), "{e} lacks {want}");
    }
    // A subtree on one side only is one difference, not one per entry in it; the
    // directories whose content changed differ in mtime too.
    assert!(!e.contains("local/node_modules"), "{e}");
}

#[test]
fn remove_tree_many_directories_in_parallel() {
    let s = tmp_in("/tmp");
    let root = s.path().join("many");
    build_bulk(&root, 40, 30, 100);
    mkdir(&root.join("ro"), 0o755);
    write(&root.join("ro/f"), b"x", 0o444);
    symlink("/etc/passwd", root.join("projects/link-out")).unwrap();
    remove_tree(&root).unwrap();
    assert!(fs::symlink_metadata(&root).is_err());
    assert!(Path::new("/etc/passwd").exists());
    assert_eq!(fs::read_dir(s.path()).unwrap().count(), 0);
}

#[test]
fn source_modified_during_copy_is_detected() {
    let s = tmp_in("/tmp");
    let src = s.path().join("claude");
    build_nasty(&src, &s.path().join("dotfiles"));
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
fn diff_reports_every_field() {
    let base = Entry {
        kind: EntryKind::File {
            size: 1,
            hash: [1; 32],
        },
        mode: 0o600,
        uid: 1,
        gid: 1,
        mtime: (1, 2),
        ino_group: None,
    };
    let mk = |e: Entry| Manifest {
        entries: [(PathBuf::from("a\nb"), e)].into_iter().collect(),
    };
    let a = mk(base.clone());
    let cases: Vec<(Entry, &str)> = vec![
        (
            Entry {
                kind: EntryKind::File {
                    size: 2,
                    hash: [1; 32],
                },
                ..base.clone()
            },
            "size 1 != 2",
        ),
        (
            Entry {
                kind: EntryKind::File {
                    size: 1,
                    hash: [2; 32],
                },
                ..base.clone()
            },
            "content differs",
        ),
        (
            Entry {
                mode: 0o644,
                ..base.clone()
            },
            "mode 0600 != 0644",
        ),
        (
            Entry {
                uid: 2,
                ..base.clone()
            },
            "owner 1:1 != 2:1",
        ),
        (
            Entry {
                gid: 3,
                ..base.clone()
            },
            "owner 1:1 != 1:3",
        ),
        (
            Entry {
                mtime: (1, 3),
                ..base.clone()
            },
            "mtime",
        ),
        (
            Entry {
                ino_group: Some(0),
                ..base.clone()
            },
            "hard-link group",
        ),
        (
            Entry {
                kind: EntryKind::Symlink { target: "x".into() },
                ..base.clone()
            },
            "file != symlink",
        ),
    ];
    for (e, want) in cases {
        let d = diff(&a, &mk(e));
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].starts_with("\"a\\nb\": "), "{d:?}");
        assert!(d[0].contains(want), "{d:?} lacks {want}");
    }
    let l = |t: &str| Entry {
        kind: EntryKind::Symlink { target: t.into() },
        ..base.clone()
    };
    assert!(diff(&mk(l("x")), &mk(l("y")))[0].contains("symlink target"));
    assert!(diff_opts(
        &a,
        &mk(Entry {
            uid: 9,
            ..base.clone()
        }),
        false
    )
    .is_empty());
    let empty = Manifest::default();
    assert_eq!(diff(&a, &empty), vec!["\"a\\nb\": only in the first tree"]);
    assert_eq!(diff(&empty, &a), vec!["\"a\\nb\": only in the second tree"]);
    assert!(diff(&a, &a).is_empty());
}

#[test]
fn manifest_groups_only_links_inside_the_tree() {
    let s = tmp_in("/tmp");
    let root = s.path().join("r");
    mkdir(&root, 0o755);
    write(&root.join("a"), b"1", 0o644);
    fs::hard_link(root.join("a"), s.path().join("outside-link")).unwrap();
    write(&root.join("b"), b"2", 0o644);
    fs::hard_link(root.join("b"), root.join("c")).unwrap();
    let m = manifest(&root).unwrap();
    assert_eq!(m.entries[Path::new("a")].ino_group, None);
    assert_eq!(m.entries[Path::new("b")].ino_group, Some(1));
    assert_eq!(m.entries[Path::new("c")].ino_group, Some(1));
    assert!(matches!(
        manifest(&s.path().join("outside-link")),
        Err(FsError::NotADirectory { .. })
    ));
}

#[test]
fn tree_stats_counts_hard_links_once_and_follows_nothing() {
    let s = tmp_in("/tmp");
    let src = s.path().join("claude");
    build_nasty(&src, &s.path().join("dotfiles"));
    let st = tree_stats(&src).unwrap();
    assert_eq!(
        st,
        TreeStats {
            files: 13,
            dirs: 9,
            symlinks: 3,
            others: 2,
            bytes: 5 * 1024 * 1024 + 114,
        }
    );
}

#[test]
fn atomic_symlink_replaces_links_and_files_but_not_dirs() {
    let s = tmp_in("/tmp");
    let link = s.path().join("dot claude");
    atomic_symlink(Path::new("/first"), &link, None).unwrap();
    assert_eq!(fs::read_link(&link).unwrap(), PathBuf::from("/first"));
    atomic_symlink(Path::new("rel/second"), &link, None).unwrap();
    assert_eq!(fs::read_link(&link).unwrap(), PathBuf::from("rel/second"));
    let file = s.path().join("claude.json");
    write(&file, b"{}", 0o600);
    atomic_symlink(Path::new("/x/.claude.json"), &file, None).unwrap();
    assert!(lmeta(&file).file_type().is_symlink());

    let dir = s.path().join("realdir");
    mkdir(&dir, 0o700);
    write(&dir.join("keep"), b"keep", 0o600);
    let e = atomic_symlink(Path::new("/x"), &dir, None).unwrap_err();
    assert!(matches!(e, FsError::RefuseReplaceDir { .. }), "{e}");
    assert_eq!(fs::read(dir.join("keep")).unwrap(), b"keep");
    // No temporary names left behind.
    let mut names: Vec<_> = fs::read_dir(s.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["claude.json", "dot claude", "realdir"]);

    if is_root() {
        atomic_symlink(Path::new("/owned"), &link, Some((1234, 4321))).unwrap();
        let m = lmeta(&link);
        assert_eq!((m.uid(), m.gid()), (1234, 4321));
    }
}

#[test]
fn remove_tree_never_follows_symlinks() {
    let s = tmp_in("/tmp");
    let src = s.path().join("claude");
    let outside = s.path().join("dotfiles");
    build_nasty(&src, &outside);
    let before = manifest(&outside).unwrap();
    remove_tree(&src).unwrap();
    assert!(fs::symlink_metadata(&src).is_err());
    assert_eq!(
        diff(&before, &manifest(&outside).unwrap()),
        Vec::<String>::new()
    );
    // A symlink at the top is unlinked, its target kept.
    let link = s.path().join("link");
    symlink(&outside, &link).unwrap();
    remove_tree(&link).unwrap();
    assert!(fs::symlink_metadata(&link).is_err());
    assert!(outside.join("outside.md").exists());
    // Missing is fine (rm -f semantics).
    remove_tree(&s.path().join("missing")).unwrap();
}

#[test]
fn filesystem_queries() {
    let s = tmp_in("/tmp");
    assert!(same_filesystem(Path::new("/tmp"), Path::new("/tmp/x/y")).unwrap());
    assert!(same_filesystem(s.path(), &s.path().join("no/such/dir")).unwrap());
    assert!(!same_filesystem(Path::new("/tmp"), Path::new("/dev/shm")).unwrap());
    assert!(!same_filesystem(Path::new("/tmp"), Path::new("/dev/shm/a/b")).unwrap());
    assert!(same_filesystem(Path::new("/tmp/no-such-thing-fsops"), Path::new("/tmp")).is_err());
    assert_eq!(nearest_existing(&s.path().join("a/b/c")), s.path());
    assert_eq!(nearest_existing(s.path()), s.path());
    let dangling = s.path().join("dangling");
    symlink("/nonexistent", &dangling).unwrap();
    assert_eq!(nearest_existing(&dangling), dangling);
    assert_eq!(
        nearest_existing(Path::new("no-such-rel/x")),
        PathBuf::from(".")
    );
    let (bytes, inodes) = free_space(&s.path().join("not/yet")).unwrap();
    assert!(bytes > 0 && inodes > 0);
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

fn build_bulk(root: &Path, dirs: usize, per_dir: usize, avg: usize) {
    mkdir(root, 0o700);
    let chunk = noise(avg * 2, 11);
    for d in 0..dirs {
        let dir = root.join(format!("projects/-home-u-p{d}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..per_dir {
            let n = (d * per_dir + f) * 7919 % (avg * 2);
            fs::write(dir.join(format!("{f:05}.jsonl")), &chunk[..n]).unwrap();
        }
    }
}

/// Peak resident set size of this process so far.
fn rss_kib() -> u64 {
    let s = fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn drop_caches() {
    let _ = Command::new("sync").status();
    let _ = fs::write("/proc/sys/vm/drop_caches", "3");
}

/// `cargo test --release -- --ignored --nocapture perf_`: figures for the report.
#[test]
#[ignore]
fn perf_copy_20k_files_200mb_vs_cp() {
    let s = tmp_in("/var/tmp");
    let a = s.path().join("a");
    build_bulk(&a, 200, 100, 10_000);
    let b = s.path().join("b");
    assert!(Command::new("cp")
        .arg("-a")
        .arg(&a)
        .arg(&b)
        .status()
        .unwrap()
        .success());
    let st = tree_stats(&a).unwrap();
    println!("tree: {st:?}");
    let d = tmp_in("/dev/shm");
    for cold in [false, true] {
        if cold {
            drop_caches();
        }
        let t = Instant::now();
        assert!(Command::new("cp")
            .arg("-a")
            .arg(&a)
            .arg(d.path().join("cp"))
            .status()
            .unwrap()
            .success());
        let t_cp = t.elapsed();
        assert!(Command::new("rm")
            .arg("-rf")
            .arg(&a)
            .status()
            .unwrap()
            .success());
        let t_cp_rm = t.elapsed();
        if cold {
            drop_caches();
        }
        let t = Instant::now();
        copy_tree_verified(&b, &d.path().join("ours"), &opts(), &|_, _| {}).unwrap();
        let t_ours = t.elapsed();
        remove_tree(&b).unwrap();
        let t_ours_rm = t.elapsed();
        println!(
            "{}: cp -a {:.3}s, cp -a && rm -rf {:.3}s | copy_tree_verified {:.3}s, + remove_tree {:.3}s",
            if cold { "cold cache" } else { "warm cache" },
            t_cp.as_secs_f64(),
            t_cp_rm.as_secs_f64(),
            t_ours.as_secs_f64(),
            t_ours_rm.as_secs_f64()
        );
        // Next round: sources back from the copies.
        assert!(Command::new("cp")
            .arg("-a")
            .arg(d.path().join("cp"))
            .arg(&a)
            .status()
            .unwrap()
            .success());
        assert!(Command::new("cp")
            .arg("-a")
            .arg(d.path().join("ours"))
            .arg(&b)
            .status()
            .unwrap()
            .success());
        remove_tree(&d.path().join("cp")).unwrap();
        remove_tree(&d.path().join("ours")).unwrap();
    }
}

#[test]
#[ignore]
fn perf_tree_stats_50k_and_manifest_memory_200k() {
    let s = tmp_in("/var/tmp");
    let r = s.path().join("r");
    build_bulk(&r, 500, 100, 1);
    let t = Instant::now();
    let st = tree_stats(&r).unwrap();
    println!(
        "tree_stats 50k files: {:.3}s {st:?}",
        t.elapsed().as_secs_f64()
    );
    drop_caches();
    let t = Instant::now();
    tree_stats(&r).unwrap();
    println!(
        "tree_stats 50k files, cold cache: {:.3}s",
        t.elapsed().as_secs_f64()
    );

    let r2 = s.path().join("r2");
    build_bulk(&r2, 2000, 100, 1);
    let before = rss_kib();
    let d = tmp_in("/dev/shm");
    let t = Instant::now();
    copy_tree_verified(&r2, &d.path().join("c"), &opts(), &|_, _| {}).unwrap();
    println!(
        "copy_tree_verified of 200k entries: {:.3}s, peak RSS +{} KiB",
        t.elapsed().as_secs_f64(),
        rss_kib().saturating_sub(before)
    );
    let before = rss_kib();
    let t = Instant::now();
    let m = manifest(&r2).unwrap();
    println!(
        "manifest of {} entries: {:.3}s, peak RSS +{} KiB",
        m.entries.len(),
        t.elapsed().as_secs_f64(),
        rss_kib().saturating_sub(before)
    );
    drop(m);
}

#[test]
fn copy_footprint_counts_blocks_and_inodes_like_a_copy_takes_them() {
    let t = tmp_in("/tmp");
    let root = t.path().join("tree");
    mkdir(&root, 0o755);
    mkdir(&root.join("sub"), 0o755);
    write(&root.join("sub/one-byte"), b"x", 0o644);
    write(&root.join("five-k"), &[1u8; 5000], 0o644);
    fs::hard_link(root.join("five-k"), root.join("five-k-again")).unwrap();
    symlink("short", root.join("short-link")).unwrap();
    symlink("l".repeat(100), root.join("long-link")).unwrap();
    // root, sub, one-byte, five-k (once), the two links: 6 inodes. Blocks: 2 dirs, one for the
    // byte, two for 5000 bytes, one for the long link's target; the short one lives in its inode.
    assert_eq!(copy_footprint(&root, 4096).unwrap(), (6 * 4096, 6));
    assert!(copy_footprint(&root.join("short-link"), 4096).is_err());
}
