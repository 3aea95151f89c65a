//! Manifests (every entry with its content hash) and their differences: what verification,
//! the tests and `undo`'s checks compare.

#[allow(unused_imports)]
use super::*;

/// Hash an open file's content into `h`, reading through `buf`: up to end of file, or exactly
/// `limit` bytes when given (fewer if the file is shorter: the hash then differs).
pub(super) fn hash_into(
    f: &mut File,
    buf: &mut [u8],
    h: &mut blake3::Hasher,
    limit: Option<u64>,
) -> io::Result<u64> {
    let mut n_total = 0u64;
    loop {
        let want = match limit {
            Some(l) if n_total >= l => return Ok(n_total),
            Some(l) => buf.len().min((l - n_total).min(usize::MAX as u64) as usize),
            None => buf.len(),
        };
        match f.read(&mut buf[..want]) {
            Ok(0) => return Ok(n_total),
            Ok(n) => {
                h.update(&buf[..n]);
                n_total += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Hash one open file. `drop_cache` asks the kernel to forget its cached pages first, so that a
/// verification after `syncfs` reads what is on the device rather than what we wrote into
/// memory (advisory: filesystems without a page cache ignore it).
pub(super) fn hash_open(
    f: &mut File,
    buf: &mut [u8],
    drop_cache: bool,
    limit: Option<u64>,
) -> io::Result<[u8; 32]> {
    if drop_cache {
        let _ = nix::fcntl::posix_fadvise(
            f.as_fd(),
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        );
    }
    let mut h = blake3::Hasher::new();
    hash_into(f, buf, &mut h, limit)?;
    Ok(*h.finalize().as_bytes())
}

/// A read buffer for a chunk of files: as large as the largest file needs (plus one byte, so
/// one read returns a small file whole and the next sees its end), at most [`BUF_SIZE`].
pub(super) fn chunk_buf(t: &Tree, files: &[u32]) -> Vec<u8> {
    let max = files
        .iter()
        .map(|&i| t.recs[i as usize].size)
        .max()
        .unwrap_or(0);
    vec![0u8; (max as usize).saturating_add(1).clamp(4096, BUF_SIZE)]
}

/// Hash the files of `chunks` (each a directory of `t` and files of it, found under `root`) in
/// parallel, each opened through its directory's descriptor, and hand each hash to `got`.
/// `sized`: read at most the size `t` recorded, so a file that grows meanwhile is not read to
/// its new end (sizes are compared apart).
pub(super) fn hash_chunks(
    t: &Tree,
    root: &Path,
    chunks: &[(u32, Vec<u32>)],
    drop_cache: bool,
    sized: bool,
    got: &(dyn Fn(u32, [u8; 32]) + Sync),
) -> Result<(), FsError> {
    par_for(chunks.len(), &|c| {
        let (d, files) = &chunks[c];
        let dpath = t.path_in(root, *d);
        let dir = open_dir(None, &dpath, &dpath)?;
        let mut buf = chunk_buf(t, files);
        for &i in files {
            let name = cstr(t.name(i));
            let shown = || t.path_in(root, i);
            let mut f =
                open_read_at(dir.as_fd(), &name).map_err(|e| nix_err(&shown(), "open")(e))?;
            let limit = sized.then(|| t.recs[i as usize].size);
            let h = hash_open(&mut f, &mut buf, drop_cache, limit)
                .map_err(|e| io_err(&shown(), "read")(e))?;
            got(i, h);
        }
        Ok(())
    })?;
    Ok(())
}

/// Hash every file of `t` (found under `root`) in parallel, each hard-linked inode once.
pub(super) fn hash_tree(t: &Tree, root: &Path, drop_cache: bool) -> Result<(), FsError> {
    let mut seen: HashMap<(u64, u64), u32> = HashMap::new();
    let mut links: Vec<(u32, u32)> = Vec::new();
    for (i, r) in t.recs.iter().enumerate() {
        if r.kind == Kind::File && r.nlink > 1 {
            match seen.entry((r.dev, r.ino)) {
                std::collections::hash_map::Entry::Occupied(o) => links.push((*o.get(), i as u32)),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(i as u32);
                }
            }
        }
    }
    let second: HashSet<u32> = links.iter().map(|&(_, i)| i).collect();
    drop(seen);
    let chunks = t.file_chunks(|i| !second.contains(&i));
    hash_chunks(t, root, &chunks, drop_cache, false, &|i, h| {
        t.recs[i as usize].set_hash(&h)
    })?;
    for (first, i) in links {
        t.recs[i as usize].set_hash(&t.recs[first as usize].hash());
    }
    Ok(())
}

/// Set hard-link groups on a scanned tree, counting only the paths present in it.
pub(super) fn group_links(t: &mut Tree) {
    let mut first: HashMap<(u64, u64), (u32, u32)> = HashMap::new();
    for (i, r) in t.recs.iter().enumerate() {
        if r.nlink > 1 && r.kind == Kind::File {
            first.entry((r.dev, r.ino)).or_insert((i as u32, 0)).1 += 1;
        }
    }
    if first.is_empty() {
        return;
    }
    for r in t.recs.iter_mut() {
        if r.nlink > 1 && r.kind == Kind::File {
            if let Some(&(idx, count)) = first.get(&(r.dev, r.ino)) {
                if count > 1 {
                    r.group = idx;
                }
            }
        }
    }
}

/// Every entry under `root` (root excluded), with content hashes. `root` must be a real
/// directory (a symlink is refused, not followed). Hard links are grouped by the first path of
/// their inode inside the tree.
pub fn manifest(root: &Path) -> Result<Manifest, FsError> {
    let (mut t, _) = scan(root)?;
    hash_tree(&t, root, false)?;
    group_links(&mut t);
    let entries = (0..t.recs.len() as u32)
        .map(|i| (t.rel(i), t.entry(i)))
        .collect();
    Ok(Manifest { entries })
}

pub(super) fn hex(h: &[u8; 32]) -> String {
    h.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

pub(super) fn kind_name(k: &EntryKind) -> &'static str {
    match k {
        EntryKind::File { .. } => "file",
        EntryKind::Dir => "directory",
        EntryKind::Symlink { .. } => "symlink",
        EntryKind::Fifo => "fifo",
        EntryKind::Socket => "socket",
        EntryKind::CharDev(_) => "char device",
        EntryKind::BlockDev(_) => "block device",
    }
}

#[cfg(test)] // production compares through `verify_against`; tests through these
/// Human-readable differences between two manifests, empty when they are equal. Compares
/// everything: kind, size, hash, mode, uid, gid, mtime, link target, device number and hard-link
/// grouping. Paths are printed quoted and escaped, so a name with a newline stays one line.
pub fn diff(a: &Manifest, b: &Manifest) -> Vec<String> {
    diff_opts(a, b, true)
}

#[cfg(test)] // production compares through `verify_against`; tests through these
/// [`diff`], optionally ignoring uid/gid: an unprivileged copy cannot give files away, so owners
/// are only compared when they were meant to be preserved.
pub fn diff_opts(a: &Manifest, b: &Manifest, compare_owner: bool) -> Vec<String> {
    diff_iter(
        a.entries.iter().map(|(p, e)| (p.as_path(), e)),
        b.entries.iter().map(|(p, e)| (p.as_path(), e)),
        compare_owner,
    )
}

#[cfg(test)] // production compares through `verify_against`; tests through these
/// The merge behind [`diff_opts`], over any two path-sorted sequences: lets verification compare
/// a scan with a manifest without building a second map.
pub(super) fn diff_iter<'a>(
    a: impl Iterator<Item = (&'a Path, &'a Entry)>,
    b: impl Iterator<Item = (&'a Path, &'a Entry)>,
    compare_owner: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut ia = a.peekable();
    let mut ib = b.peekable();
    loop {
        match (ia.peek(), ib.peek()) {
            (None, None) => break,
            (Some((p, _)), None) => {
                out.push(format!("{p:?}: only in the first tree"));
                ia.next();
            }
            (None, Some((p, _))) => {
                out.push(format!("{p:?}: only in the second tree"));
                ib.next();
            }
            (Some((pa, ea)), Some((pb, eb))) => match pa.cmp(pb) {
                std::cmp::Ordering::Less => {
                    out.push(format!("{pa:?}: only in the first tree"));
                    ia.next();
                }
                std::cmp::Ordering::Greater => {
                    out.push(format!("{pb:?}: only in the second tree"));
                    ib.next();
                }
                std::cmp::Ordering::Equal => {
                    diff_entry(pa, ea, eb, compare_owner, &mut out);
                    ia.next();
                    ib.next();
                }
            },
        }
    }
    out
}

pub(super) fn diff_entry(
    p: &Path,
    a: &Entry,
    b: &Entry,
    compare_owner: bool,
    out: &mut Vec<String>,
) {
    match (&a.kind, &b.kind) {
        (EntryKind::File { size: sa, hash: ha }, EntryKind::File { size: sb, hash: hb }) => {
            if sa != sb {
                out.push(format!("{p:?}: size {sa} != {sb}"));
            } else if ha != hb {
                out.push(format!(
                    "{p:?}: content differs (blake3 {}… != {}…)",
                    hex(ha),
                    hex(hb)
                ));
            }
        }
        (EntryKind::Symlink { target: ta }, EntryKind::Symlink { target: tb }) => {
            if ta != tb {
                out.push(format!("{p:?}: symlink target {ta:?} != {tb:?}"));
            }
        }
        (ka, kb) if ka == kb => {}
        (ka, kb) if kind_name(ka) == kind_name(kb) => {
            out.push(format!("{p:?}: device {ka:?} != {kb:?}"));
        }
        (ka, kb) => {
            out.push(format!("{p:?}: {} != {}", kind_name(ka), kind_name(kb)));
            return;
        }
    }
    if a.mode != b.mode {
        out.push(format!("{p:?}: mode {:04o} != {:04o}", a.mode, b.mode));
    }
    if compare_owner && (a.uid, a.gid) != (b.uid, b.gid) {
        out.push(format!(
            "{p:?}: owner {}:{} != {}:{}",
            a.uid, a.gid, b.uid, b.gid
        ));
    }
    if a.mtime != b.mtime {
        out.push(format!(
            "{p:?}: mtime {}.{:09} != {}.{:09}",
            a.mtime.0, a.mtime.1, b.mtime.0, b.mtime.1
        ));
    }
    if a.ino_group != b.ino_group {
        out.push(format!(
            "{p:?}: hard-link group {:?} != {:?}",
            a.ino_group, b.ino_group
        ));
    }
}
