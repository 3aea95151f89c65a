//! Read-only questions about the filesystem: tree sizes, missing and nearest existing
//! directories, same filesystem, free space.

#[allow(unused_imports)]
use super::*;

/// Counts and sizes of a tree, from one lstat walk without reading content.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub others: u64,
    /// Sum of regular file sizes, each hard-linked inode counted once.
    pub bytes: u64,
}

/// One metadata walk (root excluded), no content read, directories visited in parallel: for
/// plans and space checks. Only regular files are lstat'ed (for their size); everything else is
/// counted from the directory entry's type.
pub fn tree_stats(root: &Path) -> Result<TreeStats, FsError> {
    require_dir(root)?;
    let total = Mutex::new(TreeStats::default());
    let linked: Mutex<HashSet<(u64, u64)>> = Mutex::new(HashSet::new());
    par_walk(root, WALK_THREADS, &|path, dir| {
        // SAFETY: `dir` stays open for as long as `fd` is used; iterating it (which
        // needs `&mut`) neither closes nor replaces its descriptor.
        let fd = unsafe { BorrowedFd::borrow_raw(dir.as_raw_fd()) };
        let mut st = TreeStats::default();
        let mut subs = Vec::new();
        for e in dir.iter() {
            let e = e.map_err(nix_err(path, "read directory"))?;
            let name = e.file_name();
            if name.to_bytes() == b"." || name.to_bytes() == b".." {
                continue;
            }
            let shown = || path.join(OsStr::from_bytes(name.to_bytes()));
            match entry_kind(fd, &e, &shown)? {
                Kind::Dir => {
                    st.dirs += 1;
                    subs.push((shown(), sub_dir_id(fd, name, &shown)?));
                }
                Kind::Symlink => st.symlinks += 1,
                Kind::File => {
                    st.files += 1;
                    let m = nix::sys::stat::fstatat(fd, name, AtFlags::AT_SYMLINK_NOFOLLOW)
                        .map_err(|err| nix_err(&shown(), "lstat")(err))?;
                    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
                    let (nlink, dev, ino, size) = (
                        m.st_nlink as u64,
                        m.st_dev as u64,
                        m.st_ino as u64,
                        m.st_size as u64,
                    );
                    if nlink < 2
                        || linked
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert((dev, ino))
                    {
                        st.bytes += size;
                    }
                }
                _ => st.others += 1,
            }
        }
        let mut t = total.lock().unwrap_or_else(|p| p.into_inner());
        t.files += st.files;
        t.dirs += st.dirs;
        t.symlinks += st.symlinks;
        t.others += st.others;
        t.bytes += st.bytes;
        Ok(subs)
    })?;
    Ok(total.into_inner().unwrap_or_else(|p| p.into_inner()))
}

/// `dir` and those of its ancestors that do not exist (lstat), outermost first: what
/// `mkdir -p dir` would create, and so what an undo must remove again.
pub fn missing_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut missing = Vec::new();
    let mut d = Some(dir);
    while let Some(p) = d.filter(|p| !p.as_os_str().is_empty()) {
        if fs::symlink_metadata(p).is_ok() {
            break;
        }
        missing.push(p.to_path_buf());
        d = p.parent();
    }
    missing.reverse();
    missing
}

/// The path itself if it exists (lstat), else its nearest existing ancestor. A relative path
/// with no existing component yields `.`.
pub fn nearest_existing(path: &Path) -> PathBuf {
    let mut p = path;
    loop {
        if fs::symlink_metadata(p).is_ok() {
            return p.to_path_buf();
        }
        match p.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => p = parent,
            _ => {
                return if path.is_absolute() {
                    PathBuf::from("/")
                } else {
                    PathBuf::from(".")
                }
            }
        }
    }
}

/// Whether `a` and the nearest existing ancestor of `b` are on the same filesystem (st_dev), so
/// that `rename(2)` from one to the other works. `a` is lstat'ed (renaming a symlink moves the
/// link, which lives where the link is); `b`'s ancestor is stat'ed, because a new path below it
/// lands wherever that directory really is (e.g. `/var/lib/disinto` a symlink to another disk).
pub fn same_filesystem(a: &Path, b: &Path) -> Result<bool, FsError> {
    let da = fs::symlink_metadata(a).map_err(io_err(a, "lstat"))?.dev();
    let nb = nearest_existing(b);
    let mb = match fs::metadata(&nb) {
        Ok(m) => m,
        Err(_) => fs::symlink_metadata(&nb).map_err(io_err(&nb, "lstat"))?,
    };
    Ok(da == mb.dev())
}

/// `(bytes available to an unprivileged user, inodes available)` on the filesystem holding
/// `nearest_existing(path)`, from statvfs.
pub fn free_space(path: &Path) -> Result<(u64, u64), FsError> {
    let p = nearest_existing(path);
    let s = nix::sys::statvfs::statvfs(&p).map_err(nix_err(&p, "statvfs"))?;
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    let bytes = (s.blocks_available() as u64).saturating_mul(s.fragment_size() as u64);
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    let inodes = s.files_available() as u64;
    Ok((bytes, inodes))
}

/// What a copy of the tree at `root` (a real directory, root included) takes on a filesystem
/// of `block`-byte blocks: `(bytes, inodes)`. Each regular file's size rounded up to a whole
/// block, a block for each directory and for each symlink too long to live in its inode (ext4
/// keeps targets under 60 bytes there, tmpfs under 128); an inode per entry, hard-linked files
/// once. One descriptor-relative lstat walk, the same as every other walk of this crate.
pub(crate) fn copy_footprint(root: &Path, block: u64) -> Result<(u64, u64), FsError> {
    let (t, top) = scan(root)?;
    let round = |n: u64| n.div_ceil(block) * block;
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    for r in std::iter::once(&top).chain(t.recs.iter()) {
        if r.kind == Kind::File && r.nlink > 1 && !seen.insert((r.dev, r.ino)) {
            continue; // another name of an inode already counted
        }
        inodes += 1;
        match r.kind {
            Kind::Dir => bytes += block,
            Kind::Symlink if r.target_len >= 60 => bytes += round(u64::from(r.target_len)),
            Kind::File => bytes += round(r.size),
            _ => {}
        }
    }
    Ok((bytes, inodes))
}
