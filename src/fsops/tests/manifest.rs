//! `manifest` and `diff`: every field compared, hard links grouped only inside the tree.

use super::*;

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
