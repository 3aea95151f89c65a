//! Filesystem operations for moving `~/.claude` somewhere else without losing anything.
//!
//! The predecessor of this tool (`cp -a && rm -rf`) destroyed credentials when the target filled
//! up. Everything here is built so that the caller can only delete a source after proving the copy
//! is complete: [`copy_tree_verified`] copies, flushes the destination to stable storage, reads
//! every destination byte back and compares it (blake3) and every piece of metadata with what was
//! read from the source, and checks that the source did not change while it was being copied.
//!
//! Paths are handled as bytes throughout (`Path`/`OsStr`): names with spaces, newlines or
//! non-UTF-8 bytes are ordinary here. Symlinks are never followed, below the root of a walk or at
//! it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::{AsFd, AsRawFd, BorrowedFd, IntoRawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

/// Read/write buffer for file copies and hashing: large enough to amortise syscalls, small
/// enough that two workers stay far below any memory concern.
const BUF_SIZE: usize = 256 * 1024;

/// How many difference lines a [`FsError::VerifyMismatch`] carries before summarising the rest.
const MAX_DETAIL_LINES: usize = 20;

/// An error from this module. Every variant names the path involved; the message ends with what
/// an operator can do about it where there is something to do.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// A system call failed on `path`.
    #[error("{op} {}: {source}{}", .path.display(), hint(.source))]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// The copy does not match its source. Nothing was deleted; the partial copy may be removed.
    #[error("verification failed for {}: {detail}; the source is untouched, remove the copy and retry", .path.display())]
    VerifyMismatch { path: PathBuf, detail: String },
    /// The source was modified while it was being copied (an agent still running?).
    #[error("{} changed while it was being copied ({detail}); stop every Claude process using it and retry", .path.display())]
    SourceChanged { path: PathBuf, detail: String },
    /// The destination of a copy must not exist yet: we never merge into or overwrite anything.
    #[error("{} already exists; move it away or choose another destination", .path.display())]
    DestinationExists { path: PathBuf },
    /// A directory was required.
    #[error("{} is not a directory (or is a symlink); point at the real directory", .path.display())]
    NotADirectory { path: PathBuf },
    /// A regular file was required.
    #[error("{} is not a regular file", .path.display())]
    NotAFile { path: PathBuf },
    /// Device nodes can only be recreated by root.
    #[error("{} is a device node; only root can copy it (run as root or remove it from the tree)", .path.display())]
    DeviceNeedsRoot { path: PathBuf },
}

/// A short suggestion for the errno classes an operator can act on.
fn hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(nix::libc::ENOSPC) | Some(nix::libc::EDQUOT) => {
            " (free space on that filesystem or choose a destination with more room)"
        }
        Some(nix::libc::EACCES) | Some(nix::libc::EPERM) => {
            " (check ownership and permissions, or run as root)"
        }
        Some(nix::libc::EROFS) => " (the filesystem is read-only)",
        _ => "",
    }
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> FsError + 'a {
    move |source| FsError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

fn nix_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(nix::Error) -> FsError + 'a {
    move |e| FsError::Io {
        path: path.to_path_buf(),
        op,
        source: io::Error::from(e),
    }
}

/// What an entry is, with what identifies its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File { size: u64, hash: [u8; 32] },
    Dir,
    Symlink { target: PathBuf },
    Fifo,
    Socket,
    CharDev(u64),
    BlockDev(u64),
}

/// Everything about one entry that a faithful copy must reproduce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: EntryKind,
    /// `st_mode & 0o7777`: permission bits plus setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// `(seconds, nanoseconds)` of the modification time.
    pub mtime: (i64, i64),
    /// For a file that shares its inode with at least one other path *in this manifest*: the
    /// index (in manifest order) of the first such path. Indices rather than inode numbers make
    /// the hard-link structure compare equal across two trees; links to files outside the tree
    /// do not count, because a copy cannot (and should not) reproduce them.
    pub ino_group: Option<u64>,
}

/// Every entry under a root (the root itself excluded), keyed by path relative to the root,
/// sorted. Built with lstat only, never following symlinks; file content hashed with blake3.
/// Holds paths and hashes, never contents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    pub entries: BTreeMap<PathBuf, Entry>,
}

/// lstat `root` and require a real directory: a symlink root would otherwise be followed (or
/// yield an empty manifest), and either silently checks the wrong thing.
fn require_dir(root: &Path) -> Result<fs::Metadata, FsError> {
    let m = fs::symlink_metadata(root).map_err(io_err(root, "lstat"))?;
    if !m.file_type().is_dir() {
        return Err(FsError::NotADirectory {
            path: root.to_path_buf(),
        });
    }
    Ok(m)
}

/// lstat as a raw `stat`, for the top of a tree and single files.
fn lstat(path: &Path) -> Result<FileStat, FsError> {
    nix::sys::stat::lstat(path).map_err(nix_err(path, "lstat"))
}

/// What an entry is; `EntryKind` without the payload, one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDev,
    BlockDev,
}

#[allow(clippy::unnecessary_cast)]
fn kind_of(st_mode: u32) -> Kind {
    match st_mode as nix::libc::mode_t & nix::libc::S_IFMT {
        nix::libc::S_IFREG => Kind::File,
        nix::libc::S_IFDIR => Kind::Dir,
        nix::libc::S_IFLNK => Kind::Symlink,
        nix::libc::S_IFIFO => Kind::Fifo,
        nix::libc::S_IFSOCK => Kind::Socket,
        nix::libc::S_IFCHR => Kind::CharDev,
        _ => Kind::BlockDev,
    }
}

/// `st_mode` as `u32` (it is `mode_t`, whose width is the platform's).
#[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
fn mode_of(st: &FileStat) -> u32 {
    st.st_mode as u32
}

/// "No index": the parent of a top-level entry, or an entry in no hard-link group.
const NONE: u32 = u32::MAX;

/// One entry of a scanned tree, in 128 bytes: a copy of 200,000 files keeps 200,000 of these
/// (plus their names in one shared buffer) and nothing else per entry, which is what bounds the
/// memory of a copy (issue 5: < 64 MiB at 200,000 files).
#[derive(Debug)]
struct Rec {
    /// Regular files: `st_size`; devices: `st_rdev`; else 0.
    size: u64,
    ino: u64,
    dev: u64,
    mtime: i64,
    ctime: i64,
    atime: i64,
    /// blake3 of the content (files), written by the worker that hashed it.
    hash: [AtomicU64; 4],
    /// Index of the parent directory's record, or [`NONE`] for a child of the root.
    parent: u32,
    /// Directories: the index just past the last record of their subtree; others: own index + 1.
    end: u32,
    /// Offset of the name in [`Tree::names`]; a symlink's target follows its name there.
    name_off: u32,
    nlink: u32,
    uid: u32,
    gid: u32,
    /// Index of the first path of this inode in the tree, when at least two paths share it.
    group: u32,
    mtime_ns: u32,
    ctime_ns: u32,
    atime_ns: u32,
    name_len: u16,
    target_len: u16,
    /// `st_mode & 0o7777`.
    mode: u16,
    kind: Kind,
}

const _: () = assert!(std::mem::size_of::<Rec>() <= 128);

impl Rec {
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    fn from_stat(st: &FileStat) -> Rec {
        let kind = kind_of(mode_of(st));
        Rec {
            size: match kind {
                Kind::File => st.st_size as u64,
                Kind::CharDev | Kind::BlockDev => st.st_rdev as u64,
                _ => 0,
            },
            ino: st.st_ino as u64,
            dev: st.st_dev as u64,
            mtime: st.st_mtime as i64,
            ctime: st.st_ctime as i64,
            atime: st.st_atime as i64,
            hash: Default::default(),
            parent: NONE,
            end: 0,
            name_off: 0,
            nlink: (st.st_nlink as u64).min(u32::MAX as u64) as u32,
            uid: st.st_uid as u32,
            gid: st.st_gid as u32,
            group: NONE,
            mtime_ns: st.st_mtime_nsec as u32,
            ctime_ns: st.st_ctime_nsec as u32,
            atime_ns: st.st_atime_nsec as u32,
            name_len: 0,
            target_len: 0,
            mode: (st.st_mode & 0o7777) as u16,
            kind,
        }
    }
    fn mtime(&self) -> (i64, i64) {
        (self.mtime, self.mtime_ns as i64)
    }
    fn atime(&self) -> (i64, i64) {
        (self.atime, self.atime_ns as i64)
    }
    fn ctime(&self) -> (i64, i64) {
        (self.ctime, self.ctime_ns as i64)
    }
    fn hash(&self) -> [u8; 32] {
        let mut h = [0u8; 32];
        for (i, w) in self.hash.iter().enumerate() {
            h[i * 8..i * 8 + 8].copy_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
        }
        h
    }
    fn set_hash(&self, h: &[u8; 32]) {
        for (i, w) in self.hash.iter().enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[i * 8..i * 8 + 8]);
            w.store(u64::from_le_bytes(b), Ordering::Relaxed);
        }
    }
    /// Whether (inode, size of a file, mtime, ctime) still match `st`: any write, truncation,
    /// chmod, rename over or replacement changes one of them.
    #[allow(clippy::unnecessary_cast)]
    fn unchanged(&self, st: &FileStat) -> bool {
        let now = Rec::from_stat(st);
        now.ino == self.ino
            && now.kind == self.kind
            && (self.kind != Kind::File || now.size == self.size)
            && now.mtime() == self.mtime()
            && now.ctime() == self.ctime()
    }
}

/// A scanned tree: every entry under a root (root excluded) in manifest order, i.e. depth
/// first with each directory's entries sorted bytewise by name, which is the component-wise
/// order of their relative paths. Names live in one buffer; paths are rebuilt from the parent
/// chain when needed.
#[derive(Debug, Default)]
struct Tree {
    recs: Vec<Rec>,
    names: Vec<u8>,
}

impl Tree {
    fn name(&self, i: u32) -> &[u8] {
        let r = &self.recs[i as usize];
        &self.names[r.name_off as usize..r.name_off as usize + r.name_len as usize]
    }
    fn target(&self, i: u32) -> &[u8] {
        let r = &self.recs[i as usize];
        let start = r.name_off as usize + r.name_len as usize;
        &self.names[start..start + r.target_len as usize]
    }
    /// Path relative to the root.
    fn rel(&self, i: u32) -> PathBuf {
        let mut chain = Vec::new();
        let mut j = i;
        while j != NONE {
            chain.push(j);
            j = self.recs[j as usize].parent;
        }
        let mut p = PathBuf::new();
        for j in chain.into_iter().rev() {
            p.push(OsStr::from_bytes(self.name(j)));
        }
        p
    }
    /// `base` joined with the path of `i`, or `base` itself for [`NONE`].
    fn path_in(&self, base: &Path, i: u32) -> PathBuf {
        if i == NONE {
            base.to_path_buf()
        } else {
            base.join(self.rel(i))
        }
    }
    fn push(&mut self, mut r: Rec, name: &[u8], target: Option<&[u8]>) -> Result<u32, io::Error> {
        let too_big = || io::Error::other("tree too large (more than 4 GiB of names)");
        let i = u32::try_from(self.recs.len())
            .ok()
            .filter(|&i| i != NONE)
            .ok_or_else(too_big)?;
        r.name_off = u32::try_from(self.names.len()).map_err(|_| too_big())?;
        r.name_len = name.len() as u16;
        self.names.extend_from_slice(name);
        if let Some(t) = target {
            r.target_len =
                u16::try_from(t.len()).map_err(|_| io::Error::other("symlink target too long"))?;
            self.names.extend_from_slice(t);
        }
        r.end = i + 1;
        self.recs.push(r);
        Ok(i)
    }
    /// The next entry in the same directory after `i` (skipping `i`'s subtree).
    fn next_sibling(&self, i: u32) -> u32 {
        self.recs[i as usize].end
    }
    /// Children of the directory `d` ([`NONE`] for the root), in order.
    fn children(&self, d: u32) -> impl Iterator<Item = u32> + '_ {
        let (mut j, end) = if d == NONE {
            (0, self.recs.len() as u32)
        } else {
            (d + 1, self.recs[d as usize].end)
        };
        std::iter::from_fn(move || {
            if j >= end {
                return None;
            }
            let out = j;
            j = self.next_sibling(j);
            Some(out)
        })
    }
    fn entry(&self, i: u32) -> Entry {
        let r = &self.recs[i as usize];
        Entry {
            kind: match r.kind {
                Kind::File => EntryKind::File {
                    size: r.size,
                    hash: r.hash(),
                },
                Kind::Dir => EntryKind::Dir,
                Kind::Symlink => EntryKind::Symlink {
                    target: PathBuf::from(OsStr::from_bytes(self.target(i))),
                },
                Kind::Fifo => EntryKind::Fifo,
                Kind::Socket => EntryKind::Socket,
                Kind::CharDev => EntryKind::CharDev(r.size),
                Kind::BlockDev => EntryKind::BlockDev(r.size),
            },
            mode: r.mode as u32,
            uid: r.uid,
            gid: r.gid,
            mtime: r.mtime(),
            ino_group: (r.group != NONE).then_some(r.group as u64),
        }
    }
    /// Regular files to process, grouped by directory in chunks of at most [`CHUNK`], so that a
    /// worker opens each directory once per chunk and reaches its files by name (`openat`)
    /// rather than resolving a full path per file.
    fn file_chunks(&self, want: impl Fn(u32) -> bool) -> Vec<(u32, Vec<u32>)> {
        let mut out = Vec::new();
        let dirs = std::iter::once(NONE).chain(
            (0..self.recs.len() as u32).filter(|&i| self.recs[i as usize].kind == Kind::Dir),
        );
        for d in dirs {
            let mut cur = Vec::new();
            for c in self.children(d) {
                if self.recs[c as usize].kind == Kind::File && want(c) {
                    cur.push(c);
                    if cur.len() == CHUNK {
                        out.push((d, std::mem::take(&mut cur)));
                    }
                }
            }
            if !cur.is_empty() {
                out.push((d, cur));
            }
        }
        out
    }
}

mod copy;
mod manifest;
mod query;
mod remove;
#[cfg(test)]
mod tests;
mod verify;
mod walk;

/// fsync a directory, opened by its path.
fn fsync_dir(dir: &Path) -> Result<(), FsError> {
    let d = File::open(dir).map_err(io_err(dir, "open directory"))?;
    d.sync_all().map_err(io_err(dir, "fsync directory"))
}

fn parent_or_dot(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

#[allow(unused_imports)]
use copy::*;
#[allow(unused_imports)]
use manifest::*;
#[allow(unused_imports)]
use query::*;
#[allow(unused_imports)]
use remove::*;
#[allow(unused_imports)]
use verify::*;
#[allow(unused_imports)]
use walk::*;

pub(crate) use copy::copy_file_verified;
pub use copy::{copy_tree_verified, CopyOptions, CopyStats};
#[cfg(test)]
pub(crate) use manifest::diff;
pub use manifest::manifest;
pub(crate) use query::{copy_footprint, free_space, missing_dirs, nearest_existing};
pub use query::{same_filesystem, tree_stats, TreeStats};
pub use remove::remove_tree;
pub use verify::verify_trees;
#[cfg(feature = "bench-rayon")]
#[doc(hidden)]
pub use walk::PAR_FOR_ON_RAYON;
