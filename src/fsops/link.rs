//! Replacing a link atomically.

#[allow(unused_imports)]
use super::*;

pub(super) fn fsync_dir(dir: &Path) -> Result<(), FsError> {
    let d = File::open(dir).map_err(io_err(dir, "open directory"))?;
    d.sync_all().map_err(io_err(dir, "fsync directory"))
}

pub(super) fn parent_or_dot(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Create or replace `link` atomically: build the symlink under a temporary name in the same
/// directory, lchown it to `owner` if given, and rename it over `link`, so that at every instant
/// `link` is either the old entry or the new symlink. Refuses to replace a real directory (a
/// rename cannot do that anyway, and `ln -sfn` would silently put the link *inside* it).
pub fn atomic_symlink(
    target: &Path,
    link: &Path,
    owner: Option<(u32, u32)>,
) -> Result<(), FsError> {
    if let Ok(m) = fs::symlink_metadata(link) {
        if m.file_type().is_dir() {
            return Err(FsError::RefuseReplaceDir {
                path: link.to_path_buf(),
            });
        }
    }
    let tmp = crate::atomic::symlink_temp(link);
    std::os::unix::fs::symlink(target, &tmp).map_err(io_err(&tmp, "symlink"))?;
    let finish = || -> Result<(), FsError> {
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::lchown(&tmp, Some(uid), Some(gid))
                .map_err(io_err(&tmp, "lchown"))?;
        }
        fs::rename(&tmp, link).map_err(io_err(link, "rename symlink into place"))
    };
    if let Err(e) = finish() {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fsync_dir(parent_or_dot(link))
}
