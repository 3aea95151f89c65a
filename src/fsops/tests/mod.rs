//! The fsops tests, one file per module they test; the shared trees and checks live here.

use super::*;
use std::os::unix::fs::{symlink, FileTypeExt, PermissionsExt};
use std::process::Command;

mod copy;
mod manifest;
mod perf;
mod query;
mod remove;
mod verify;

fn set_mtime(p: &Path, sec: i64, nsec: i64) {
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
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

/// A temp dir in /tmp holding `build_nasty`'s tree at `claude` (its outside directory at
/// `dotfiles`).
fn nasty_tree() -> (tempfile::TempDir, PathBuf) {
    let s = tmp_in("/tmp");
    let src = s.path().join("claude");
    build_nasty(&src, &s.path().join("dotfiles"));
    (s, src)
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

/// A tree of `dirs` directories of `per_dir` files of about `avg` bytes.
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
