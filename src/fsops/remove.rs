//! Removing a tree without ever following a symlink, in parallel.

#[allow(unused_imports)]
use super::*;

/// `rm -rf` that never follows symlinks: a symlink (at the top or anywhere inside) is unlinked,
/// its target left alone. A path that does not exist is not an error. Stops at the first failure
/// and names the path.
///
/// Directories are emptied in parallel (a small pool of workers, each unlinking a directory's
/// entries by name relative to its descriptor, `unlinkat`), then removed deepest first.
/// Every directory is opened with `O_NOFOLLOW`, so one swapped for a symlink is an error.
pub fn remove_tree(path: &Path) -> Result<(), FsError> {
    let m = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(path, "lstat")(e)),
    };
    if !m.file_type().is_dir() {
        return fs::remove_file(path).map_err(io_err(path, "unlink"));
    }
    let dirs: Mutex<Vec<(PathBuf, DirId)>> = Mutex::new(Vec::new());
    par_walk(path, UNLINK_THREADS, &|p, dir| {
        // SAFETY: `dir` stays open for as long as `fd` is used; iterating it (which
        // needs `&mut`) neither closes nor replaces its descriptor.
        let fd = unsafe { BorrowedFd::borrow_raw(dir.as_raw_fd()) };
        let own = nix::sys::stat::fstat(fd).map_err(nix_err(p, "stat"))?;
        let mut subs = Vec::new();
        let mut names = Vec::new();
        for e in dir.iter() {
            let e = e.map_err(nix_err(p, "read directory"))?;
            let name = e.file_name();
            if name.to_bytes() == b"." || name.to_bytes() == b".." {
                continue;
            }
            let shown = || p.join(OsStr::from_bytes(name.to_bytes()));
            if entry_kind(fd, &e, &shown)? == Kind::Dir {
                subs.push((shown(), sub_dir_id(fd, name, &shown)?));
            } else {
                names.push(name.to_owned());
            }
        }
        // Unlink after listing: removing entries while reading the directory is allowed but
        // may make some filesystems return entries twice or skip some.
        for n in names {
            nix::unistd::unlinkat(fd, n.as_c_str(), nix::unistd::UnlinkatFlags::NoRemoveDir)
                .map_err(|e| nix_err(&p.join(OsStr::from_bytes(n.as_bytes())), "unlink")(e))?;
        }
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
        dirs.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((p.to_path_buf(), (own.st_dev as u64, own.st_ino as u64)));
        // A directory listed, its subdirectories not yet opened (issue 10 finding 4):
        // `remove-tree-listed-<depth>`, 0 for the root of the removal.
        #[cfg(feature = "failpoints")]
        crate::failpoint::hook(&format!(
            "remove-tree-listed-{}",
            p.components().count() - path.components().count()
        ));
        Ok(subs)
    })?;
    let mut dirs = dirs.into_inner().unwrap_or_else(|p| p.into_inner());
    // Deepest first: a directory has more components than any of its ancestors. Each is
    // removed from its parent's descriptor, the parent checked to be the directory listed
    // (never an rmdir by a path that a swapped parent could send elsewhere); the root itself,
    // whose parent the caller named, by its path.
    dirs.sort_unstable_by_key(|(d, _)| std::cmp::Reverse(d.components().count()));
    let ids: HashMap<PathBuf, DirId> = dirs.iter().cloned().collect();
    for (d, _) in &dirs {
        match (d.parent(), d.file_name()) {
            (Some(parent), Some(name)) if d != path => {
                let Some(&pid) = ids.get(parent) else {
                    return Err(io_err(d, "rmdir")(io::Error::other(
                        "its parent was not listed",
                    )));
                };
                let pd = open_dir_as(parent, pid)?;
                nix::unistd::unlinkat(
                    pd.as_fd(),
                    cstr(name.as_bytes()).as_c_str(),
                    nix::unistd::UnlinkatFlags::RemoveDir,
                )
                .map_err(nix_err(d, "rmdir"))?;
            }
            _ => fs::remove_dir(d).map_err(io_err(d, "rmdir"))?,
        }
    }
    Ok(())
}

/// Open for reading without following a symlink and, where the kernel allows it (owner or
/// root), without updating the source's atime.
pub(super) fn open_noatime(path: &Path) -> Result<File, FsError> {
    let r = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOATIME | nix::libc::O_NOFOLLOW)
        .open(path);
    match r {
        Ok(f) => Ok(f),
        Err(e) if e.raw_os_error() == Some(nix::libc::EPERM) => OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)
            .map_err(io_err(path, "open")),
        Err(e) => Err(io_err(path, "open")(e)),
    }
}
