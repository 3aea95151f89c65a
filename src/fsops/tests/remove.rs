//! `remove_tree`: many directories at once, and never through a symlink.

use super::*;

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
