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
    let dirs: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    par_walk(path, UNLINK_THREADS, &|p, dir| {
        let fd = dir.as_raw_fd();
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
                subs.push(shown());
            } else {
                names.push(name.to_owned());
            }
        }
        // Unlink after listing: removing entries while reading the directory is allowed but
        // may make some filesystems return entries twice or skip some.
        for n in names {
            nix::unistd::unlinkat(
                Some(fd),
                n.as_c_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            )
            .map_err(|e| nix_err(&p.join(OsStr::from_bytes(n.as_bytes())), "unlink")(e))?;
        }
        dirs.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(p.to_path_buf());
        Ok(subs)
    })?;
    let mut dirs = dirs.into_inner().unwrap_or_else(|p| p.into_inner());
    // Deepest first: a directory has more components than any of its ancestors.
    dirs.sort_unstable_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in &dirs {
        fs::remove_dir(d).map_err(io_err(d, "rmdir"))?;
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
