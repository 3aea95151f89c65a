//! `tree_stats`, the filesystem queries, and `copy_footprint`.

use super::*;

#[test]
fn tree_stats_counts_hard_links_once_and_follows_nothing() {
    let (_dir, src) = nasty_tree();
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
