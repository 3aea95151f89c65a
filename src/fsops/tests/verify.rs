//! `verify_trees`: corruption that keeps size and mtime, missing and extra entries.

use super::*;

#[test]
fn verify_catches_corruption_with_same_size_and_mtime() {
    let (s, src) = nasty_tree();
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
    let (s, src) = nasty_tree();
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
