//! `atomic_symlink`.

use super::*;

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
