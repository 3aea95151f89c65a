//! Proving a copy: the read-back of every destination byte and every piece of metadata.

#[allow(unused_imports)]
use super::*;

/// Most difference lines kept while verifying, so a wholly wrong tree cannot exhaust memory.
pub(super) const MAX_DIFFS_KEPT: usize = 1000;

/// Require the tree at `dst` to equal the scanned, hashed and link-grouped tree `t` of `src`:
/// first a streaming metadata walk of `dst` merged with `t` (kind, size, mode, owner when
/// `compare_owner`, mtime, symlink target, device number, hard-link grouping, and entries on
/// one side only), then every byte of every file read back and hashed, in parallel, a chunk of
/// one directory's files at a time. Memory stays that of `t` plus 4 bytes per file.
pub(super) fn verify_against(
    t: &Tree,
    src: &Path,
    dst: &Path,
    compare_owner: bool,
    drop_cache: bool,
) -> Result<(), FsError> {
    require_dir(dst)?;
    let mut d: Vec<String> = Vec::new();
    let mut total = 0usize;
    let mut push = |d: &mut Vec<String>, line: String| {
        total += 1;
        if d.len() < MAX_DIFFS_KEPT {
            d.push(line);
        }
    };
    let rel_in = |parent: u32, name: &CStr| {
        let base = if parent == NONE {
            PathBuf::new()
        } else {
            t.rel(parent)
        };
        base.join(OsStr::from_bytes(name.to_bytes()))
    };
    // In a fresh copy every link of an inode is inside the tree, so nlink > 1 alone says
    // "grouped"; anything else is a real difference and is reported as one.
    let mut first_of: HashMap<(u64, u64), u32> = HashMap::new();
    let mut to_hash: Vec<u32> = Vec::new();
    merge_walk(t, dst, &mut |s| {
        match s {
            Seen::Expected(j) => push(&mut d, format!("{:?}: only in the first tree", t.rel(j))),
            Seen::Actual { parent, name } => push(
                &mut d,
                format!("{:?}: only in the second tree", rel_in(parent, name)),
            ),
            Seen::Both { i, st, dir, name } => {
                let exp = t.entry(i);
                let got = Rec::from_stat(st);
                let kind = match got.kind {
                    Kind::File => EntryKind::File {
                        size: got.size,
                        // Content is compared below, by reading it back.
                        hash: match exp.kind {
                            EntryKind::File { hash, .. } => hash,
                            _ => [0; 32],
                        },
                    },
                    Kind::Dir => EntryKind::Dir,
                    Kind::Symlink => EntryKind::Symlink {
                        target: PathBuf::from(OsString::from_vec(readlink_at(dir, name, &|| {
                            dst.join(t.rel(i))
                        })?)),
                    },
                    Kind::Fifo => EntryKind::Fifo,
                    Kind::Socket => EntryKind::Socket,
                    Kind::CharDev => EntryKind::CharDev(got.size),
                    Kind::BlockDev => EntryKind::BlockDev(got.size),
                };
                let group = (got.kind == Kind::File && got.nlink > 1)
                    .then(|| *first_of.entry((got.dev, got.ino)).or_insert(i) as u64);
                let act = Entry {
                    kind,
                    mode: got.mode as u32,
                    uid: got.uid,
                    gid: got.gid,
                    mtime: got.mtime(),
                    ino_group: group,
                };
                if act != exp {
                    let mut lines = Vec::new();
                    diff_entry(&t.rel(i), &exp, &act, compare_owner, &mut lines);
                    for l in lines {
                        push(&mut d, l);
                    }
                }
                if matches!((&exp.kind, &act.kind), (EntryKind::File { size: a, .. }, EntryKind::File { size: b, .. }) if a == b)
                {
                    to_hash.push(i);
                }
            }
        }
        Ok(())
    })?;
    drop(first_of);

    // Content: group the files to read back by directory.
    let mut chunks: Vec<(u32, Vec<u32>)> = Vec::new();
    for i in to_hash {
        let p = t.recs[i as usize].parent;
        match chunks.last_mut() {
            Some((d, v)) if *d == p && v.len() < CHUNK => v.push(i),
            _ => chunks.push((p, vec![i])),
        }
    }
    let bad: Mutex<Vec<(u32, [u8; 32])>> = Mutex::new(Vec::new());
    hash_chunks(t, dst, &chunks, drop_cache, true, &|i, h| {
        if h != t.recs[i as usize].hash() {
            bad.lock().unwrap_or_else(|p| p.into_inner()).push((i, h));
        }
    })?;
    let mut bad = bad.into_inner().unwrap_or_else(|p| p.into_inner());
    bad.sort_unstable_by_key(|b| b.0);
    for (i, h) in bad {
        push(
            &mut d,
            format!(
                "{:?}: content differs (blake3 {}… != {}…)",
                t.rel(i),
                hex(&t.recs[i as usize].hash()),
                hex(&h)
            ),
        );
    }
    if total == 0 {
        return Ok(());
    }
    let mut detail = format!("{total} differences between {} and it: ", src.display());
    detail.push_str(
        &d.iter()
            .take(MAX_DETAIL_LINES)
            .cloned()
            .collect::<Vec<_>>()
            .join("; "),
    );
    if total > MAX_DETAIL_LINES {
        detail.push_str(&format!("; … and {} more", total - MAX_DETAIL_LINES));
    }
    Err(FsError::VerifyMismatch {
        path: dst.to_path_buf(),
        detail,
    })
}

/// Compare two existing trees completely (content included), as [`copy_tree_verified`] does
/// after copying: `Ok` when `dst` is a faithful copy of `src`, else [`FsError::VerifyMismatch`]
/// listing the differences. Owners are compared when `compare_owner`.
pub fn verify_trees(src: &Path, dst: &Path, compare_owner: bool) -> Result<(), FsError> {
    let (mut t, _) = scan(src)?;
    hash_tree(&t, src, false)?;
    group_links(&mut t);
    verify_against(&t, src, dst, compare_owner, false)
}

/// `syncfs(2)` on the filesystem holding `path`, then fsync of its parent directory so that the
/// new entry for `path` itself is durable too (the parent may be on another filesystem).
pub(super) fn sync_tree(path: &Path) -> Result<(), FsError> {
    let f = File::open(path).map_err(io_err(path, "open"))?;
    nix::unistd::syncfs(f.as_fd()).map_err(nix_err(path, "syncfs"))?;
    fsync_dir(parent_or_dot(path))
}

pub(super) fn check_dst_free(dst: &Path) -> Result<(), FsError> {
    match fs::symlink_metadata(dst) {
        Ok(_) => Err(FsError::DestinationExists {
            path: dst.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let parent = parent_or_dot(dst);
            let m = fs::metadata(parent).map_err(io_err(parent, "stat parent of destination"))?;
            if m.is_dir() {
                Ok(())
            } else {
                Err(FsError::NotADirectory {
                    path: parent.to_path_buf(),
                })
            }
        }
        Err(e) => Err(io_err(dst, "lstat")(e)),
    }
}
