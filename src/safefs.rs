//! Descriptor-relative file operations for trees another user controls (issue 10,
//! docs/security.md).
//!
//! Run as root for a home owned by U, every directory U can write may be swapped for a symlink
//! between two of our system calls. A full path resolved twice can therefore name two different
//! files. Here a tree is entered once, from a trusted base, one component at a time with
//! `O_NOFOLLOW | O_DIRECTORY`, and everything after that is done relative to the opened
//! descriptor (`openat`, `mkdirat`, `renameat`, `unlinkat`, `fstat`, `fchown`, `fchmod`): what we
//! checked is what we change.

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode};
use std::ffi::{CString, OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

const DIR: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_CLOEXEC);

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a file name holds a NUL byte"))
}

fn single(name: &OsStr) -> io::Result<CString> {
    if name.is_empty()
        || name.as_bytes().contains(&b'/')
        || name == OsStr::new(".")
        || name == OsStr::new("..")
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("'{}' is not a single file name", name.to_string_lossy()),
        ));
    }
    cstr(name)
}

/// An open directory, and the path it was reached by (for messages only: never resolved again).
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Dir {
    fn from_raw(fd: OwnedFd, path: PathBuf) -> Dir {
        Dir { fd, path }
    }

    /// Open a trusted base (the home, the shared dir's root-owned parent) by its path. Symlinks
    /// on the way are followed: the base is named by root, or resolved by root at settings time.
    pub fn open(path: &Path) -> io::Result<Dir> {
        let fd = nix::fcntl::open(path, DIR, Mode::empty())?;
        Ok(Dir::from_raw(fd, path.to_path_buf()))
    }

    /// Open `path` as a directory without following a symlink at its last component.
    pub fn open_nofollow(path: &Path) -> io::Result<Dir> {
        let fd = nix::fcntl::open(path, DIR | OFlag::O_NOFOLLOW, Mode::empty())?;
        Ok(Dir::from_raw(fd, path.to_path_buf()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The subdirectory `name`, never through a symlink (ELOOP / ENOTDIR if it is one).
    pub fn sub(&self, name: &OsStr) -> io::Result<Dir> {
        let c = single(name)?;
        let fd = nix::fcntl::openat(
            self.fd.as_fd(),
            c.as_c_str(),
            DIR | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )?;
        Ok(Dir::from_raw(fd, self.path.join(name)))
    }

    /// `rel` below this directory, each component opened relative to the last with
    /// `O_NOFOLLOW`: no symlink anywhere on the way is followed. `rel` must be relative and
    /// hold no `..`.
    pub fn walk(&self, rel: &Path) -> io::Result<Dir> {
        let mut cur = self.sub_self()?;
        for c in normal_components(rel)? {
            cur = cur.sub(c)?;
        }
        Ok(cur)
    }

    /// Like [`walk`](Self::walk), creating the missing directories (mode `mode`, then given to
    /// `owner` through their own descriptor). Returns the directory and the paths created,
    /// outermost first. A component that appears meanwhile is used if it is a real directory.
    pub fn walk_create(
        &self,
        rel: &Path,
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> io::Result<(Dir, Vec<PathBuf>)> {
        let mut cur = self.sub_self()?;
        let mut created = Vec::new();
        for c in normal_components(rel)? {
            let name = single(c)?;
            match nix::sys::stat::mkdirat(
                cur.as_fd(),
                name.as_c_str(),
                Mode::from_bits_truncate(mode as _),
            ) {
                Ok(()) => {
                    let d = cur.sub(c)?;
                    d.set_mode(mode)?;
                    if let Some((u, g)) = owner {
                        d.set_owner(u, g)?;
                    }
                    created.push(d.path.clone());
                    cur = d;
                }
                Err(nix::errno::Errno::EEXIST) => cur = cur.sub(c)?,
                Err(e) => return Err(e.into()),
            }
        }
        Ok((cur, created))
    }

    fn sub_self(&self) -> io::Result<Dir> {
        let fd = nix::fcntl::openat(self.fd.as_fd(), ".", DIR, Mode::empty())?;
        Ok(Dir::from_raw(fd, self.path.clone()))
    }

    /// `fstat` of the directory itself.
    pub fn stat(&self) -> io::Result<FileStat> {
        Ok(nix::sys::stat::fstat(self.fd.as_fd())?)
    }

    /// `lstat` of `name` in this directory; None when there is no such entry.
    pub fn lstat(&self, name: &OsStr) -> io::Result<Option<FileStat>> {
        let c = single(name)?;
        match nix::sys::stat::fstatat(self.fd.as_fd(), c.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(nix::errno::Errno::ENOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// `fchmod` of the directory itself.
    pub fn set_mode(&self, mode: u32) -> io::Result<()> {
        Ok(nix::sys::stat::fchmod(
            self.fd.as_fd(),
            Mode::from_bits_truncate(mode as _),
        )?)
    }

    /// `fchown` of the directory itself.
    pub fn set_owner(&self, uid: u32, gid: u32) -> io::Result<()> {
        Ok(nix::unistd::fchown(
            self.fd.as_fd(),
            Some(uid.into()),
            Some(gid.into()),
        )?)
    }

    /// Read the regular file `name` (never through a symlink at `name`), refusing a fifo,
    /// device, socket or directory (`InvalidData`) and anything over `max` bytes
    /// (`FileTooLarge`), before reading a byte. None: no such file.
    pub fn read_file(&self, name: &OsStr, max: u64) -> io::Result<Option<(Vec<u8>, FileStat)>> {
        let c = single(name)?;
        let fd = match nix::fcntl::openat(
            self.fd.as_fd(),
            c.as_c_str(),
            OFlag::O_RDONLY
                | OFlag::O_NOFOLLOW
                | OFlag::O_NONBLOCK
                | OFlag::O_NOCTTY
                | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(nix::errno::Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let file = std::fs::File::from(fd);
        let st = nix::sys::stat::fstat(file.as_fd())?;
        check_regular(&st, max, &self.path.join(name))?;
        let mut bytes = Vec::with_capacity(st.st_size as usize);
        file.take(max + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > max {
            return Err(too_large(&self.path.join(name), max));
        }
        Ok(Some((bytes, st)))
    }

    /// Replace (or create) `name` in this directory atomically: a temp file
    /// `.<name>.dci-tmp-<pid>` created `O_EXCL` 0600 here, written, given `owner` and `mode`
    /// through its descriptor, synced, `renameat` over `name`, the directory synced. Nothing is
    /// resolved by path, so a swap of this directory or its parents cannot redirect the write.
    pub fn write_atomic(
        &self,
        name: &OsStr,
        bytes: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> io::Result<()> {
        let target = single(name)?;
        let mut tmp = OsString::from(".");
        tmp.push(name);
        tmp.push(format!(".dci-tmp-{}", std::process::id()));
        let tmp_c = single(&tmp)?;
        let create = || {
            nix::fcntl::openat(
                self.fd.as_fd(),
                tmp_c.as_c_str(),
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
        };
        let fd = match create() {
            Err(nix::errno::Errno::EEXIST) => {
                // Ours (same pid) from a run that died: never a directory, never followed.
                nix::unistd::unlinkat(
                    self.fd.as_fd(),
                    tmp_c.as_c_str(),
                    nix::unistd::UnlinkatFlags::NoRemoveDir,
                )?;
                create()?
            }
            r => r?,
        };
        let mut file = std::fs::File::from(fd);
        let res = (|| -> io::Result<()> {
            file.write_all(bytes)?;
            if let Some((u, g)) = owner {
                nix::unistd::fchown(file.as_fd(), Some(u.into()), Some(g.into()))?;
            }
            nix::sys::stat::fchmod(file.as_fd(), Mode::from_bits_truncate(mode as _))?;
            file.sync_all()?;
            nix::fcntl::renameat(
                self.fd.as_fd(),
                tmp_c.as_c_str(),
                self.fd.as_fd(),
                target.as_c_str(),
            )?;
            Ok(())
        })();
        if let Err(e) = res {
            let _ = nix::unistd::unlinkat(
                self.fd.as_fd(),
                tmp_c.as_c_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
            return Err(e);
        }
        self.sync()
    }

    /// `openat(name, flags | O_NOFOLLOW | O_CLOEXEC, mode)`: a file in this directory, never
    /// through a link at `name`.
    pub fn open_file(&self, name: &OsStr, flags: OFlag, mode: u32) -> io::Result<std::fs::File> {
        let c = single(name)?;
        let fd = nix::fcntl::openat(
            self.fd.as_fd(),
            c.as_c_str(),
            flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode as _),
        )?;
        Ok(std::fs::File::from(fd))
    }

    /// `mkdirat(name, mode)` (the umask applies, as for mkdir(2)); never through a link at
    /// `name` (EEXIST if anything is there).
    pub fn mkdir_at(&self, name: &OsStr, mode: u32) -> io::Result<()> {
        let c = single(name)?;
        Ok(nix::sys::stat::mkdirat(
            self.fd.as_fd(),
            c.as_c_str(),
            Mode::from_bits_truncate(mode as _),
        )?)
    }

    /// `unlinkat` of a non-directory; Ok when it is already gone.
    pub fn unlink(&self, name: &OsStr) -> io::Result<()> {
        self.unlinkat_gone_ok(name, nix::unistd::UnlinkatFlags::NoRemoveDir)
    }

    /// `unlinkat(AT_REMOVEDIR)` of an empty directory; Ok when it is already gone.
    pub fn rmdir(&self, name: &OsStr) -> io::Result<()> {
        self.unlinkat_gone_ok(name, nix::unistd::UnlinkatFlags::RemoveDir)
    }

    fn unlinkat_gone_ok(&self, name: &OsStr, flag: nix::unistd::UnlinkatFlags) -> io::Result<()> {
        let c = single(name)?;
        match nix::unistd::unlinkat(self.fd.as_fd(), c.as_c_str(), flag) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The names in this directory (without `.` and `..`), read through its descriptor.
    pub fn names(&self) -> io::Result<Vec<OsString>> {
        names_of(self.fd.as_fd())
    }

    /// `rm -r` of the entry `name`, through descriptors: a directory is entered with
    /// `O_NOFOLLOW` (a link in its place is unlinked, its target left alone) and emptied by
    /// name relative to its descriptor. Ok when it is already gone.
    pub fn remove_tree_at(&self, name: &OsStr) -> io::Result<()> {
        let Some(st) = self.lstat(name)? else {
            return Ok(());
        };
        if st.st_mode & nix::libc::S_IFMT != nix::libc::S_IFDIR {
            return self.unlink(name);
        }
        let sub = self.sub(name)?;
        for n in sub.names()? {
            sub.remove_tree_at(&n)?;
        }
        self.rmdir(name)
    }

    /// [`remove_tree_at`](Self::remove_tree_at), but only what the user `uid` could remove
    /// themselves, given that they can write this directory: whoever can write a directory can
    /// unlink any entry in it and rmdir any empty directory in it, whatever their owners, but
    /// cannot empty a directory that is not theirs. So a directory is entered and emptied only
    /// when it is `uid`'s (checked on the opened descriptor: a swap after the check is caught);
    /// one that is not is removed only if it is empty. Anything else is `PermissionDenied`,
    /// with what was removed up to then gone and the rest left. For a tree another user
    /// controls (a staging name they could have planted, one of root's directories renamed
    /// inside): root then does nothing they could not do.
    pub fn remove_tree_owned(&self, name: &OsStr, uid: u32) -> io::Result<()> {
        let Some(st) = self.lstat(name)? else {
            return Ok(());
        };
        if st.st_mode & nix::libc::S_IFMT != nix::libc::S_IFDIR {
            return self.unlink(name);
        }
        let sub = self.sub(name)?;
        let own = sub.stat()?;
        if own.st_uid != uid {
            return match self.rmdir(name) {
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOTEMPTY) => Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "'{}' belongs to uid {}, not {uid}, and is not empty: left as it is",
                        sub.path.display(),
                        own.st_uid
                    ),
                )),
                r => r,
            };
        }
        for n in sub.names()? {
            sub.remove_tree_owned(&n, uid)?;
        }
        self.rmdir(name)
    }

    /// `fsetxattr` on the directory itself (false where the file system has no user xattrs).
    pub fn set_xattr(&self, attr: &std::ffi::CStr, value: &[u8]) -> bool {
        // SAFETY: the name is NUL-terminated, the value's length is given; the fd is ours.
        unsafe {
            nix::libc::fsetxattr(
                self.raw(),
                attr.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            ) == 0
        }
    }

    /// `fgetxattr` of the directory itself, at most 256 bytes; None when there is none.
    pub fn get_xattr(&self, attr: &std::ffi::CStr) -> Option<Vec<u8>> {
        let mut buf = [0u8; 256];
        // SAFETY: the name is NUL-terminated; the buffer's length is given; the fd is ours.
        let n = unsafe {
            nix::libc::fgetxattr(
                self.raw(),
                attr.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        let n = usize::try_from(n).ok()?;
        Some(buf[..n].to_vec())
    }

    /// `fremovexattr` on the directory itself.
    pub fn remove_xattr(&self, attr: &std::ffi::CStr) {
        // SAFETY: the name is NUL-terminated; the fd is ours.
        let _ = unsafe { nix::libc::fremovexattr(self.raw(), attr.as_ptr()) };
    }

    /// `fsync` the entry `name` (a file or directory, never through a link at `name`): its
    /// data and its own metadata (mode, owner, times).
    pub fn sync_at(&self, name: &OsStr) -> io::Result<()> {
        let c = single(name)?;
        let fd = nix::fcntl::openat(
            self.fd.as_fd(),
            c.as_c_str(),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(nix::unistd::fsync(fd.as_fd())?)
    }

    /// `fsync` the directory.
    pub fn sync(&self) -> io::Result<()> {
        Ok(nix::unistd::fsync(self.fd.as_fd())?)
    }

    /// `renameat(self/from, to/to_name)`.
    pub fn rename_to(&self, from: &OsStr, to: &Dir, to_name: &OsStr) -> io::Result<()> {
        let (a, b) = (single(from)?, single(to_name)?);
        Ok(nix::fcntl::renameat(
            self.fd.as_fd(),
            a.as_c_str(),
            to.as_fd(),
            b.as_c_str(),
        )?)
    }

    /// `renameat2(self/a, to/b, RENAME_EXCHANGE)`: the two names swap their entries in one
    /// step. EINVAL where the filesystem cannot exchange.
    pub fn exchange(&self, a: &OsStr, to: &Dir, b: &OsStr) -> io::Result<()> {
        let (a, b) = (single(a)?, single(b)?);
        Ok(nix::fcntl::renameat2(
            self.fd.as_fd(),
            a.as_c_str(),
            to.as_fd(),
            b.as_c_str(),
            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
        )?)
    }

    /// `symlinkat(target, self/name)`, then, with `owner`, `fchownat(AT_SYMLINK_NOFOLLOW)` of
    /// the new link itself. The link is removed again if the chown fails.
    pub fn symlink_at(
        &self,
        target: &Path,
        name: &OsStr,
        owner: Option<(u32, u32)>,
    ) -> io::Result<()> {
        let c = single(name)?;
        nix::unistd::symlinkat(target, self.fd.as_fd(), c.as_c_str())?;
        if let Some((uid, gid)) = owner {
            let chown = nix::unistd::fchownat(
                self.fd.as_fd(),
                c.as_c_str(),
                Some(uid.into()),
                Some(gid.into()),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            );
            if let Err(e) = chown {
                let _ = self.unlink(name);
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Create or replace the entry `name` with a symlink to `target`, atomically: the link is
    /// made under `tmp` (a name in this directory), given to `owner`, and renamed over `name`, so
    /// that `name` is at every instant either the old entry or the new link; then the directory
    /// is fsynced. A real directory at `name` is refused (a rename cannot replace it anyway, and
    /// `ln -sfn` would put the link inside it): `AlreadyExists`.
    pub fn replace_with_link(
        &self,
        target: &Path,
        name: &OsStr,
        tmp: &OsStr,
        owner: Option<(u32, u32)>,
    ) -> io::Result<()> {
        if self
            .lstat(name)?
            .is_some_and(|st| st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFDIR)
        {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "'{}' is a real directory; refusing to replace it with a link (move it away first)",
                    self.path.join(name).display()
                ),
            ));
        }
        self.symlink_at(target, tmp, owner)?;
        if let Err(e) = self.rename_to(tmp, self, name) {
            let _ = self.unlink(tmp);
            return Err(e);
        }
        self.sync()
    }

    /// `utimensat(name, AT_SYMLINK_NOFOLLOW)`: atime and mtime of the entry itself.
    pub fn set_times_at(
        &self,
        name: &OsStr,
        atime: (i64, i64),
        mtime: (i64, i64),
    ) -> io::Result<()> {
        let c = single(name)?;
        Ok(nix::sys::stat::utimensat(
            self.fd.as_fd(),
            c.as_c_str(),
            &ts(atime),
            &ts(mtime),
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )?)
    }

    /// The mtime of the entry `name` itself (atime left as it is; a symlink is not followed).
    pub fn set_mtime_at(&self, name: &OsStr, mtime: (i64, i64)) -> io::Result<()> {
        self.set_times_at(name, (0, UTIME_OMIT), mtime)
    }

    /// `futimens` of the directory itself: its mtime (atime left as it is).
    pub fn set_mtime(&self, mtime: (i64, i64)) -> io::Result<()> {
        let omit = nix::sys::time::TimeSpec::new(0, UTIME_OMIT);
        Ok(nix::sys::stat::futimens(
            self.fd.as_fd(),
            &omit,
            &ts(mtime),
        )?)
    }
}

/// UTIME_OMIT: leave that time as it is.
const UTIME_OMIT: i64 = (1i64 << 30) - 2;

/// The names in the directory `dir` (without `.` and `..`), read through a fresh descriptor of
/// it (so `dir`'s own position is left alone).
fn names_of(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    let fd = nix::fcntl::openat(dir, ".", DIR, Mode::empty())?;
    let mut d = nix::dir::Dir::from_fd(fd)?;
    let mut out = Vec::new();
    for e in d.iter() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(OsString::from_vec(n.to_vec()));
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Run `probe`, which makes and removes an entry of the directory `dir` (a lock probe), then put
/// `dir`'s mtime back as it was, so that the probe leaves no trace: a `verify` changes nothing.
/// Unless the directory's entries are no longer those it had before: then someone else changed
/// it meanwhile (an agent took its lock), and the mtime is theirs, not ours to put back over.
/// The check and the restore are two calls; a change between them is the one left window.
/// Where the entries cannot be listed (another user's directory), the mtime is put back as
/// before, which the kernel allows only to its owner and root.
pub fn without_trace<T>(dir: BorrowedFd<'_>, probe: impl FnOnce() -> T) -> T {
    let before = nix::sys::stat::fstat(dir).ok();
    let names = names_of(dir).ok();
    let out = probe();
    let unchanged = match (&names, names_of(dir).ok()) {
        (Some(a), Some(b)) => *a == b,
        _ => true,
    };
    if let Some(st) = before.filter(|_| unchanged) {
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
        let mtime = (st.st_mtime as i64, st.st_mtime_nsec as i64);
        let _ = nix::sys::stat::futimens(
            dir,
            &nix::sys::time::TimeSpec::new(0, UTIME_OMIT),
            &ts(mtime),
        );
    }
    out
}

fn ts(t: (i64, i64)) -> nix::sys::time::TimeSpec {
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    nix::sys::time::TimeSpec::new(t.0 as _, t.1 as _)
}

/// A file the tool edits (env file, rc file), reached through its symlinks: the directory that
/// really holds it, opened, and its name there.
#[derive(Debug)]
pub struct Target {
    pub dir: Dir,
    pub name: OsString,
}

impl Target {
    /// Resolve `path`'s links ([`resolve_links`]) and open the directory that holds the file.
    pub fn resolve(path: &Path) -> io::Result<Target> {
        let (dir, name) = resolve_links(path)?;
        Ok(Target {
            dir: Dir::open(&dir)?,
            name,
        })
    }

    /// The file's full path (for messages and the journal).
    pub fn path(&self) -> PathBuf {
        self.dir.path().join(&self.name)
    }

    /// Its bytes ([`Dir::read_file`]).
    pub fn read(&self, max: u64) -> io::Result<Option<(Vec<u8>, FileStat)>> {
        self.dir.read_file(&self.name, max)
    }

    /// Replace it atomically in its own directory ([`Dir::write_atomic`]).
    pub fn write(&self, bytes: &[u8], mode: u32, owner: Option<(u32, u32)>) -> io::Result<()> {
        self.dir.write_atomic(&self.name, bytes, mode, owner)
    }
}

fn normal_components(rel: &Path) -> io::Result<Vec<&OsStr>> {
    rel.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("'{}' must be a relative path without '..'", rel.display()),
            )),
        })
        .collect()
}

/// Refuse what is not a regular file, or is larger than `max`: before reading it.
pub fn check_regular(st: &FileStat, max: u64, path: &Path) -> io::Result<()> {
    let kind = match st.st_mode & nix::libc::S_IFMT {
        nix::libc::S_IFREG => {
            if st.st_size as u64 > max {
                return Err(too_large(path, max));
            }
            return Ok(());
        }
        nix::libc::S_IFDIR => "a directory",
        nix::libc::S_IFIFO => "a fifo",
        nix::libc::S_IFCHR => "a character device",
        nix::libc::S_IFBLK => "a block device",
        nix::libc::S_IFSOCK => "a socket",
        nix::libc::S_IFLNK => "a symlink",
        _ => "not a regular file",
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("'{}' is {kind}, not a regular file", path.display()),
    ))
}

fn too_large(path: &Path, max: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::FileTooLarge,
        format!("'{}' holds more than {max} bytes", path.display()),
    )
}

/// `dir` opened from `home`, component by component without following a link, when it is
/// inside the home (whose owner controls every directory there); else from the deepest of its
/// ancestors that only root (or the running user) can change ([`open_fixed`]).
pub fn open_beneath(home: &Path, dir: &Path) -> io::Result<Dir> {
    match dir.strip_prefix(home) {
        Ok(rel) => Dir::open(home)?.walk(rel),
        Err(_) => open_fixed(dir),
    }
}

/// Whether nobody but root and `euid` can change what the entry `st` is or (a directory) what
/// its names lead to: owned by one of them, and a directory writable by its owner only, or
/// sticky (there only an entry's owner may rename or remove it, and the next component is
/// checked in turn). A symlink's own mode means nothing; its owner is what counts.
fn fixed(st: &FileStat, euid: u32) -> bool {
    if st.st_uid != 0 && st.st_uid != euid {
        return false;
    }
    let kind = st.st_mode & nix::libc::S_IFMT;
    kind == nix::libc::S_IFLNK || st.st_mode & 0o022 == 0 || st.st_mode & nix::libc::S_ISVTX != 0
}

/// Every ancestor of the canonical path `real`, and `real` itself, is [`fixed`].
fn chain_fixed(real: &Path, euid: u32) -> bool {
    real.ancestors().all(|p| {
        nix::sys::stat::lstat(p)
            .map(|st| fixed(&st, euid))
            .unwrap_or(false)
    })
}

/// `dir` (absolute), opened without following any link that someone other than root or the
/// running user could have put on the way (issue 10). Its ancestors are looked at from `/` down:
/// the deepest one whose whole chain only root and the running user can change (a link there
/// counts only when where it leads is such a chain too) is opened by its path, and the rest
/// of `dir` is walked from it one component at a time with `O_NOFOLLOW` ([`Dir::walk`]).
///
/// For a run as root, the directories the tool made and gave to the home's owner (the shared
/// dir and the parents it created, an env file's new directories) are below that point: a
/// link their owner swaps in is an error (ELOOP, ENOTDIR), never followed.
pub fn open_fixed(dir: &Path) -> io::Result<Dir> {
    let Ok(rel) = dir.strip_prefix("/") else {
        return Dir::open(dir);
    };
    let comps = normal_components(rel)?;
    let euid = nix::unistd::geteuid().as_raw();
    let mut base = PathBuf::from("/");
    let mut depth = 0;
    for c in &comps {
        let next = base.join(c);
        let Ok(st) = nix::sys::stat::lstat(&next) else {
            break;
        };
        if !fixed(&st, euid) {
            break;
        }
        if st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFLNK
            && !std::fs::canonicalize(&next).is_ok_and(|real| chain_fixed(&real, euid))
        {
            break;
        }
        base = next;
        depth += 1;
    }
    let rest: PathBuf = comps[depth..].iter().collect();
    Dir::open(&base)?.walk(&rest)
}

/// `rmdir` of the empty directory `path`, through its parent opened as [`open_beneath`] does
/// (no link the home's owner could have put on the way is followed), then the parent fsynced
/// (also when the entry was already gone: a resumed run makes the removal of the run that
/// died durable). Ok(false) when it was already gone; the parent too, then nothing is synced.
pub fn rmdir_beneath(home: &Path, path: &Path) -> io::Result<bool> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("'{}' has no parent", path.display()),
        ));
    };
    let dir = match open_beneath(home, parent) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let there = dir.lstat(name)?.is_some();
    if there {
        dir.rmdir(name)?;
    }
    dir.sync()?;
    Ok(there)
}

/// Set the mtime of the directory entry `path` itself (atime kept, a link not followed),
/// reaching its directory as [`open_beneath`] does, so a directory the home's owner swapped for
/// a link on the way cannot redirect it (issue 10).
pub fn set_mtime_beneath(home: &Path, path: &Path, mtime: (i64, i64)) -> io::Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Dir::open_nofollow(path)?.set_mtime(mtime);
    };
    if path == home || !path.starts_with(home) {
        return open_fixed(parent)?.set_mtime_at(name, mtime);
    }
    open_beneath(home, parent)?.set_mtime_at(name, mtime)
}

/// The bytes of an env or rc file named by `path`, through its links, bounded by `max` and
/// refusing a fifo, device, socket or directory before reading (see [`Dir::read_file`]): the
/// one way every reader of those files reads them. None: no such file.
pub fn read_small(path: &Path, max: u64) -> io::Result<Option<Vec<u8>>> {
    let tg = match Target::resolve(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(tg.read(max)?.map(|(b, _)| b))
}

/// Where a file named through symlinks really is: its directory and name after following
/// every link (relative or absolute, chained; at most 40, as the kernel allows). The directory
/// is canonical. `path` itself need not be a link; the final file need not exist.
pub fn resolve_links(path: &Path) -> io::Result<(PathBuf, OsString)> {
    let mut cur = path.to_path_buf();
    for _ in 0..40 {
        let (parent, name) = split(&cur)?;
        let dir = std::fs::canonicalize(&parent)?;
        match std::fs::symlink_metadata(dir.join(&name)) {
            Ok(m) if m.file_type().is_symlink() => {
                let t = std::fs::read_link(dir.join(&name))?;
                cur = if t.is_absolute() { t } else { dir.join(t) };
            }
            Ok(_) => return Ok((dir, name)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((dir, name)),
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("'{}': too many levels of symbolic links", path.display()),
    ))
}

fn split(p: &Path) -> io::Result<(PathBuf, OsString)> {
    match (p.parent(), p.file_name()) {
        (Some(d), Some(n)) => Ok((
            if d.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                d.to_path_buf()
            },
            OsString::from_vec(n.as_bytes().to_vec()),
        )),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("'{}' does not name a file", p.display()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_probe_leaves_no_trace_but_a_concurrent_change_keeps_its_mtime() {
        use std::os::unix::fs::MetadataExt;
        let t = tempfile::tempdir().unwrap();
        let d = Dir::open(t.path()).unwrap();
        d.set_mtime((1_600_000_000, 123)).unwrap();
        let mtime = || {
            let m = std::fs::metadata(t.path()).unwrap();
            (m.mtime(), m.mtime_nsec())
        };
        let probe = OsStr::new("x.dci-probe-1");
        let made = without_trace(d.as_fd(), || {
            d.mkdir_at(probe, 0o700).and_then(|()| d.rmdir(probe))
        });
        made.unwrap();
        assert_eq!(
            mtime(),
            (1_600_000_000, 123),
            "the probe's own mkdir and rmdir"
        );
        // Someone else makes an entry while the probe runs: the directory's mtime is theirs.
        without_trace(d.as_fd(), || {
            d.mkdir_at(probe, 0o700).unwrap();
            std::fs::create_dir(t.path().join("x.lock")).unwrap();
            d.rmdir(probe).unwrap();
        });
        assert!(mtime().0 > 1_600_000_000, "{:?}", mtime());
    }

    #[test]
    fn replace_with_link_replaces_links_and_files_but_not_dirs() {
        use std::os::unix::fs::MetadataExt;
        let t = tempfile::tempdir().unwrap();
        let d = Dir::open(t.path()).unwrap();
        let (link, tmp) = (OsStr::new("dot claude"), OsStr::new(".dot claude.tmp"));
        let read = |n: &str| std::fs::read_link(t.path().join(n)).unwrap();
        d.replace_with_link(Path::new("/first"), link, tmp, None)
            .unwrap();
        assert_eq!(read("dot claude"), Path::new("/first"));
        d.replace_with_link(Path::new("rel/second"), link, tmp, None)
            .unwrap();
        assert_eq!(read("dot claude"), Path::new("rel/second"));
        std::fs::write(t.path().join("claude.json"), b"{}").unwrap();
        d.replace_with_link(
            Path::new("/x/.claude.json"),
            OsStr::new("claude.json"),
            tmp,
            None,
        )
        .unwrap();
        assert_eq!(read("claude.json"), Path::new("/x/.claude.json"));

        std::fs::create_dir(t.path().join("realdir")).unwrap();
        std::fs::write(t.path().join("realdir/keep"), b"keep").unwrap();
        let e = d
            .replace_with_link(Path::new("/x"), OsStr::new("realdir"), tmp, None)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
        assert_eq!(
            std::fs::read(t.path().join("realdir/keep")).unwrap(),
            b"keep"
        );
        // No temporary name left behind, after a success or a refusal.
        let mut names = d.names().unwrap();
        names.sort();
        assert_eq!(names, ["claude.json", "dot claude", "realdir"]);

        if nix::unistd::geteuid().is_root() {
            d.replace_with_link(Path::new("/owned"), link, tmp, Some((1234, 4321)))
                .unwrap();
            let m = std::fs::symlink_metadata(t.path().join("dot claude")).unwrap();
            assert_eq!((m.uid(), m.gid()), (1234, 4321));
        }
    }

    #[test]
    fn walk_never_follows_a_link_on_the_way() {
        let t = tempfile::tempdir().unwrap();
        let base = Dir::open(t.path()).unwrap();
        std::fs::create_dir_all(t.path().join("a/b")).unwrap();
        std::fs::create_dir(t.path().join("elsewhere")).unwrap();
        symlink(t.path().join("elsewhere"), t.path().join("link")).unwrap();
        assert!(base.walk(Path::new("a/b")).is_ok());
        for rel in ["link", "link/x", "a/../link", "/etc"] {
            assert!(base.walk(Path::new(rel)).is_err(), "{rel}");
        }
        // walk_create refuses too, creating nothing through the link.
        assert!(base
            .walk_create(Path::new("link/new"), 0o700, None)
            .is_err());
        assert!(!t.path().join("elsewhere/new").exists());
        let (d, made) = base.walk_create(Path::new("a/b/c/d"), 0o700, None).unwrap();
        assert_eq!(made, vec![t.path().join("a/b/c"), t.path().join("a/b/c/d")]);
        assert_eq!(d.path(), t.path().join("a/b/c/d"));
        assert_eq!(d.stat().unwrap().st_mode & 0o7777, 0o700);
    }

    #[test]
    fn write_atomic_lands_in_the_opened_directory_even_after_a_swap() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("d")).unwrap();
        std::fs::create_dir(t.path().join("victim")).unwrap();
        let d = Dir::open(t.path()).unwrap().walk(Path::new("d")).unwrap();
        // The directory is renamed away and a link to `victim` put in its place.
        std::fs::rename(t.path().join("d"), t.path().join("d.moved")).unwrap();
        symlink(t.path().join("victim"), t.path().join("d")).unwrap();
        d.write_atomic(OsStr::new("f"), b"hello", 0o640, None)
            .unwrap();
        assert_eq!(std::fs::read(t.path().join("d.moved/f")).unwrap(), b"hello");
        assert!(!t.path().join("victim/f").exists());
        let (bytes, st) = d.read_file(OsStr::new("f"), 100).unwrap().unwrap();
        assert_eq!(bytes, b"hello");
        assert_eq!(st.st_mode & 0o7777, 0o640);
        assert_eq!(
            d.read_file(OsStr::new("f"), 3).unwrap_err().kind(),
            io::ErrorKind::FileTooLarge
        );
        assert!(d.read_file(OsStr::new("nothing"), 3).unwrap().is_none());
    }

    #[test]
    fn read_file_refuses_fifos_and_links_without_blocking() {
        let t = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(&t.path().join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        std::fs::write(t.path().join("real"), b"x").unwrap();
        symlink("real", t.path().join("link")).unwrap();
        let d = Dir::open(t.path()).unwrap();
        assert_eq!(
            d.read_file(OsStr::new("fifo"), 10).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        assert!(d.read_file(OsStr::new("link"), 10).is_err());
        assert!(d.read_file(OsStr::new("../x"), 10).is_err());
    }

    #[test]
    fn a_target_is_edited_in_its_own_directory_and_the_link_stays() {
        let t = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(t.path()).unwrap();
        std::fs::create_dir(root.join("dotfiles")).unwrap();
        std::fs::write(root.join("dotfiles/bashrc"), b"old\n").unwrap();
        symlink("dotfiles/bashrc", root.join(".bashrc")).unwrap();
        let tg = Target::resolve(&root.join(".bashrc")).unwrap();
        assert_eq!(tg.path(), root.join("dotfiles/bashrc"));
        let (old, st) = tg.read(100).unwrap().unwrap();
        assert_eq!(old, b"old\n");
        tg.write(b"new\n", st.st_mode & 0o7777, None).unwrap();
        assert_eq!(
            std::fs::read_link(root.join(".bashrc")).unwrap(),
            Path::new("dotfiles/bashrc")
        );
        assert_eq!(
            std::fs::read(root.join("dotfiles/bashrc")).unwrap(),
            b"new\n"
        );
    }

    #[test]
    fn resolve_links_follows_relative_and_chained_links() {
        let t = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(t.path()).unwrap();
        std::fs::create_dir_all(root.join("dotfiles/shell")).unwrap();
        std::fs::write(root.join("dotfiles/shell/bashrc"), b"x").unwrap();
        symlink("shell/bashrc", root.join("dotfiles/bashrc")).unwrap();
        symlink("dotfiles/bashrc", root.join(".bashrc")).unwrap();
        assert_eq!(
            resolve_links(&root.join(".bashrc")).unwrap(),
            (root.join("dotfiles/shell"), OsString::from("bashrc"))
        );
        assert_eq!(
            resolve_links(&root.join("plain")).unwrap(),
            (root.clone(), OsString::from("plain"))
        );
        symlink("loop", root.join("loop")).unwrap();
        assert!(resolve_links(&root.join("loop")).is_err());
    }
}
