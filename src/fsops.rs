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
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
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
    /// [`atomic_symlink`] will not replace a real directory: that would destroy its contents.
    #[error("{} is a real directory; refusing to replace it with a symlink (move it away first)", .path.display())]
    RefuseReplaceDir { path: PathBuf },
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

/// One entry as seen by a scan, with the inode facts needed to group hard links and to notice a
/// source that changes under us. Kept only while a manifest or a copy is being built.
struct Scanned {
    rel: PathBuf,
    entry: Entry,
    dev: u64,
    ino: u64,
    nlink: u64,
    ctime: (i64, i64),
    atime: (i64, i64),
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

fn walker(root: &Path) -> walkdir::WalkDir {
    walkdir::WalkDir::new(root)
        .follow_links(false)
        .follow_root_links(false)
        .min_depth(1)
        .sort_by(|a, b| a.file_name().cmp(b.file_name()))
}

fn walk_err(root: &Path, e: walkdir::Error) -> FsError {
    let path = e.path().unwrap_or(root).to_path_buf();
    let source = e
        .into_io_error()
        .unwrap_or_else(|| io::Error::other("filesystem loop"));
    FsError::Io {
        path,
        op: "read directory",
        source,
    }
}

fn kind_of(path: &Path, m: &fs::Metadata) -> Result<EntryKind, FsError> {
    let ft = m.file_type();
    Ok(if ft.is_file() {
        EntryKind::File {
            size: m.size(),
            hash: [0; 32],
        }
    } else if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_symlink() {
        EntryKind::Symlink {
            target: fs::read_link(path).map_err(io_err(path, "readlink"))?,
        }
    } else if ft.is_fifo() {
        EntryKind::Fifo
    } else if ft.is_socket() {
        EntryKind::Socket
    } else if ft.is_char_device() {
        EntryKind::CharDev(m.rdev())
    } else {
        EntryKind::BlockDev(m.rdev())
    })
}

fn scanned_from(root: &Path, path: &Path, m: &fs::Metadata) -> Result<Scanned, FsError> {
    let rel = path.strip_prefix(root).unwrap_or(path).to_path_buf();
    Ok(Scanned {
        rel,
        entry: Entry {
            kind: kind_of(path, m)?,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ino_group: None,
        },
        dev: m.dev(),
        ino: m.ino(),
        nlink: m.nlink(),
        ctime: (m.ctime(), m.ctime_nsec()),
        atime: (m.atime(), m.atime_nsec()),
    })
}

/// lstat walk of everything under `root`, in manifest order. Reads no file content.
fn scan(root: &Path) -> Result<Vec<Scanned>, FsError> {
    require_dir(root)?;
    let mut out = Vec::new();
    for e in walker(root) {
        let e = e.map_err(|e| walk_err(root, e))?;
        let m = e.metadata().map_err(|e| walk_err(root, e))?;
        out.push(scanned_from(root, e.path(), &m)?);
    }
    // Walk order (depth first, names sorted bytewise) is already component-wise path order; the
    // sort only makes that an invariant rather than an assumption, and is O(n) when sorted.
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

/// Hash a file's content with blake3. `drop_cache` asks the kernel to forget cached pages first,
/// so that a verification after `syncfs` reads what is on the device rather than what we wrote
/// into memory.
fn hash_file(path: &Path, drop_cache: bool) -> Result<[u8; 32], FsError> {
    let mut f = open_noatime(path)?;
    if drop_cache {
        // Advisory: failure (e.g. on filesystems without a page cache) changes nothing.
        let _ = nix::fcntl::posix_fadvise(
            f.as_raw_fd(),
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        );
    }
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                h.update(&buf[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(path, "read")(e)),
        }
    }
    Ok(*h.finalize().as_bytes())
}

/// Open for reading without updating the source's atime where the kernel allows it (owner or
/// root): copying or verifying should not modify what it copies.
fn open_noatime(path: &Path) -> Result<File, FsError> {
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

/// Number of worker threads for content work: the cores we have, capped, since a copy is
/// bounded by storage as soon as there are more than a few.
fn workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4)
}

/// Run `job(i)` for every `i` in `0..n` on a small pool of scoped threads. Stops handing out work
/// after the first error, and returns it. Results are collected per index.
fn par_for<T: Send>(
    n: usize,
    job: &(dyn Fn(usize) -> Result<T, FsError> + Sync),
) -> Result<Vec<(usize, T)>, FsError> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_err: Mutex<Option<FsError>> = Mutex::new(None);
    let results: Mutex<Vec<(usize, T)>> = Mutex::new(Vec::with_capacity(n));
    let threads = workers().min(n.max(1));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut local = Vec::new();
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    match job(i) {
                        Ok(t) => local.push((i, t)),
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            let mut g = first_err.lock().unwrap_or_else(|p| p.into_inner());
                            g.get_or_insert(e);
                            break;
                        }
                    }
                }
                results
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(local);
            });
        }
    });
    if let Some(e) = first_err.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    Ok(results.into_inner().unwrap_or_else(|p| p.into_inner()))
}

/// Hash every regular file of a scan in parallel (each hard-linked inode once).
fn hash_scanned(root: &Path, items: &mut [Scanned], drop_cache: bool) -> Result<(), FsError> {
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let jobs: Vec<usize> = (0..items.len())
        .filter(|&i| {
            matches!(items[i].entry.kind, EntryKind::File { .. })
                && (items[i].nlink < 2 || seen.insert((items[i].dev, items[i].ino)))
        })
        .collect();
    let ro: &[Scanned] = items;
    let hashes = par_for(jobs.len(), &|j| {
        hash_file(&root.join(&ro[jobs[j]].rel), drop_cache)
    })?;
    let mut by_inode: HashMap<(u64, u64), [u8; 32]> = HashMap::new();
    for (j, h) in hashes {
        let it = &mut items[jobs[j]];
        if it.nlink > 1 {
            by_inode.insert((it.dev, it.ino), h);
        }
        set_hash(&mut it.entry, h);
    }
    for it in items.iter_mut() {
        if it.nlink > 1 {
            if let Some(h) = by_inode.get(&(it.dev, it.ino)) {
                set_hash(&mut it.entry, *h);
            }
        }
    }
    Ok(())
}

fn set_hash(e: &mut Entry, h: [u8; 32]) {
    if let EntryKind::File { hash, .. } = &mut e.kind {
        *hash = h;
    }
}

/// Set hard-link groups on a sorted scan, counting only the paths present in it.
fn group_links(items: &mut [Scanned]) {
    let mut first: HashMap<(u64, u64), (u64, u32)> = HashMap::new();
    for (i, it) in items.iter().enumerate() {
        if it.nlink > 1 && matches!(it.entry.kind, EntryKind::File { .. }) {
            first.entry((it.dev, it.ino)).or_insert((i as u64, 0)).1 += 1;
        }
    }
    for it in items.iter_mut() {
        if it.nlink > 1 {
            if let Some(&(idx, count)) = first.get(&(it.dev, it.ino)) {
                if count > 1 {
                    it.entry.ino_group = Some(idx);
                }
            }
        }
    }
}

/// Every entry under `root` (root excluded), with content hashes. `root` must be a real
/// directory (not a symlink to one): see [`FsError::NotADirectory`].
///
/// Built straight into the map (no intermediate list of scans) so that 200,000 entries stay
/// around 50 MiB: paths, metadata and hashes only.
pub fn manifest(root: &Path) -> Result<Manifest, FsError> {
    require_dir(root)?;
    let mut entries: BTreeMap<PathBuf, Entry> = BTreeMap::new();
    // Inode of every multiply-linked file, to group links afterwards; rare, so kept aside.
    let mut linked: HashMap<PathBuf, (u64, u64)> = HashMap::new();
    for e in walker(root) {
        let e = e.map_err(|e| walk_err(root, e))?;
        let m = e.metadata().map_err(|e| walk_err(root, e))?;
        let s = scanned_from(root, e.path(), &m)?;
        if s.nlink > 1 && m.file_type().is_file() {
            linked.insert(s.rel.clone(), (s.dev, s.ino));
        }
        entries.insert(s.rel, s.entry);
    }
    let files: Vec<&Path> = entries
        .iter()
        .filter(|(_, e)| matches!(e.kind, EntryKind::File { .. }))
        .map(|(p, _)| p.as_path())
        .collect();
    let mut hashes = vec![[0u8; 32]; files.len()];
    for (i, h) in par_for(files.len(), &|i| hash_file(&root.join(files[i]), false))? {
        hashes[i] = h;
    }
    drop(files);
    let mut hi = hashes.into_iter();
    for e in entries.values_mut() {
        if matches!(e.kind, EntryKind::File { .. }) {
            set_hash(e, hi.next().unwrap_or([0; 32]));
        }
    }
    if !linked.is_empty() {
        let mut first: HashMap<(u64, u64), (u64, u32)> = HashMap::new();
        for (i, p) in entries.keys().enumerate() {
            if let Some(k) = linked.get(p) {
                first.entry(*k).or_insert((i as u64, 0)).1 += 1;
            }
        }
        for (p, k) in &linked {
            if let (Some(&(idx, n)), Some(e)) = (first.get(k), entries.get_mut(p)) {
                if n > 1 {
                    e.ino_group = Some(idx);
                }
            }
        }
    }
    Ok(Manifest { entries })
}

fn hex(h: &[u8; 32]) -> String {
    h.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn kind_name(k: &EntryKind) -> &'static str {
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

/// Human-readable differences between two manifests, empty when they are equal. Compares
/// everything: kind, size, hash, mode, uid, gid, mtime, link target, device number and hard-link
/// grouping. Paths are printed quoted and escaped, so a name with a newline stays one line.
pub fn diff(a: &Manifest, b: &Manifest) -> Vec<String> {
    diff_opts(a, b, true)
}

/// [`diff`], optionally ignoring uid/gid: an unprivileged copy cannot give files away, so owners
/// are only compared when they were meant to be preserved.
pub fn diff_opts(a: &Manifest, b: &Manifest, compare_owner: bool) -> Vec<String> {
    diff_iter(
        a.entries.iter().map(|(p, e)| (p.as_path(), e)),
        b.entries.iter().map(|(p, e)| (p.as_path(), e)),
        compare_owner,
    )
}

/// The merge behind [`diff_opts`], over any two path-sorted sequences: lets verification compare
/// a scan with a manifest without building a second map.
fn diff_iter<'a>(
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

fn diff_entry(p: &Path, a: &Entry, b: &Entry, compare_owner: bool, out: &mut Vec<String>) {
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

/// One lstat walk (root excluded), no content read: for plans and space checks.
pub fn tree_stats(root: &Path) -> Result<TreeStats, FsError> {
    require_dir(root)?;
    let mut st = TreeStats::default();
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    for e in walkdir::WalkDir::new(root)
        .follow_links(false)
        .follow_root_links(false)
        .min_depth(1)
    {
        let e = e.map_err(|e| walk_err(root, e))?;
        let ft = e.file_type();
        if ft.is_dir() {
            st.dirs += 1;
        } else if ft.is_symlink() {
            st.symlinks += 1;
        } else if ft.is_file() {
            st.files += 1;
            let m = e.metadata().map_err(|e| walk_err(root, e))?;
            if m.nlink() < 2 || seen.insert((m.dev(), m.ino())) {
                st.bytes += m.size();
            }
        } else {
            st.others += 1;
        }
    }
    Ok(st)
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

/// A name in `dir` that nothing else uses, for building something before renaming it into place.
fn temp_sibling(path: &Path, tag: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut name = OsString::from(".");
    name.push(path.file_name().unwrap_or(OsStr::new("x")));
    name.push(format!(
        ".{tag}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    dir.join(name)
}

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
    let tmp = temp_sibling(link, "symlink");
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

/// Options for the copy functions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyOptions {
    /// Give every copied entry its source's uid and gid (needs root; set it when running as root).
    /// When false, owners are neither set nor verified.
    pub preserve_owner: bool,
}

/// What a copy did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CopyStats {
    pub files: u64,
    pub bytes: u64,
    pub dirs: u64,
    pub symlinks: u64,
}

fn ts(t: (i64, i64)) -> TimeSpec {
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    TimeSpec::new(t.0 as _, t.1 as _)
}

/// chown (optional), chmod, then times, in that order: chown clears setuid/setgid bits, and any
/// change would bump times we set earlier. Never follows a symlink.
fn apply_meta(path: &Path, s: &Scanned, opts: &CopyOptions) -> Result<(), FsError> {
    let is_link = matches!(s.entry.kind, EntryKind::Symlink { .. });
    if opts.preserve_owner {
        std::os::unix::fs::lchown(path, Some(s.entry.uid), Some(s.entry.gid))
            .map_err(io_err(path, "lchown"))?;
    }
    if !is_link {
        // The path was just created by us and is not a symlink, so chmod (which follows links)
        // acts on it.
        nix::sys::stat::fchmodat(
            None,
            path,
            Mode::from_bits_truncate(s.entry.mode as _),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(nix_err(path, "chmod"))?;
    }
    nix::sys::stat::utimensat(
        None,
        path,
        &ts(s.atime),
        &ts(s.entry.mtime),
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(nix_err(path, "set times"))
}

/// Copy one file's bytes from `src` into the new file `dst` (created exclusively), hashing what
/// is written, then set owner, mode and times on the open descriptor. The hash is of the exact
/// bytes written, so a later read-back of `dst` proves what landed on disk.
///
/// A read/hash/write loop is used rather than `copy_file_range`: the bytes have to be hashed
/// anyway, and doing it on the way through reads the source once instead of twice. Across
/// filesystems (the only case where this tool copies instead of renaming) the kernel would fall
/// back to a splice through a pipe for `copy_file_range` anyway, so nothing is lost.
fn copy_file_data(
    src: &Path,
    dst: &Path,
    s: &Scanned,
    opts: &CopyOptions,
    on_bytes: &dyn Fn(u64),
) -> Result<[u8; 32], FsError> {
    let mut input = open_noatime(src)?;
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(dst)
        .map_err(io_err(dst, "create"))?;
    let mut h = blake3::Hasher::new();
    let mut copied = 0u64;
    let mut buf = vec![0u8; BUF_SIZE.min(s_size(s).max(4096) as usize)];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(src, "read")(e)),
        };
        out.write_all(&buf[..n]).map_err(io_err(dst, "write"))?;
        h.update(&buf[..n]);
        copied += n as u64;
        on_bytes(n as u64);
    }
    if copied != s_size(s) {
        return Err(FsError::SourceChanged {
            path: src.to_path_buf(),
            detail: format!("{} bytes read where lstat said {}", copied, s_size(s)),
        });
    }
    let fd = out.as_raw_fd();
    if opts.preserve_owner {
        std::os::unix::fs::fchown(&out, Some(s.entry.uid), Some(s.entry.gid))
            .map_err(io_err(dst, "fchown"))?;
    }
    nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(s.entry.mode as _))
        .map_err(nix_err(dst, "fchmod"))?;
    nix::sys::stat::futimens(fd, &ts(s.atime), &ts(s.entry.mtime))
        .map_err(nix_err(dst, "set times"))?;
    // Errors that a filesystem only reports at close (NFS, quota) would otherwise be lost.
    drop(out);
    Ok(*h.finalize().as_bytes())
}

fn s_size(s: &Scanned) -> u64 {
    match s.entry.kind {
        EntryKind::File { size, .. } => size,
        _ => 0,
    }
}

/// Throttles progress callbacks: at most one every few milliseconds from any thread, so that
/// a UI can be driven directly without slowing the copy.
struct Progress<'a> {
    cb: &'a (dyn Fn(u64, u64) + Sync),
    files: AtomicU64,
    bytes: AtomicU64,
    start: Instant,
    last_ms: AtomicU64,
}

impl Progress<'_> {
    const EVERY_MS: u64 = 5;

    fn tick(&self, files: u64, bytes: u64) {
        let f = self.files.fetch_add(files, Ordering::Relaxed) + files;
        let b = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let now = self.start.elapsed().as_millis() as u64 + Self::EVERY_MS;
        let last = self.last_ms.load(Ordering::Relaxed);
        if now >= last + Self::EVERY_MS
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            (self.cb)(f, b);
        }
    }

    fn finish(&self) {
        (self.cb)(
            self.files.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        );
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Create everything that is not a regular file's content: directories (private 0700 until the
/// end, so nothing is readable through them mid-copy), symlinks, fifos, sockets and devices.
fn create_special(
    src_root: &Path,
    dst: &Path,
    s: &Scanned,
    opts: &CopyOptions,
) -> Result<(), FsError> {
    match &s.entry.kind {
        EntryKind::Dir => fs::DirBuilder::new()
            .mode(0o700)
            .create(dst)
            .map_err(io_err(dst, "mkdir")),
        EntryKind::Symlink { target } => {
            std::os::unix::fs::symlink(target, dst).map_err(io_err(dst, "symlink"))?;
            apply_meta(dst, s, opts)
        }
        EntryKind::File { .. } => Ok(()),
        other => {
            let (kind, dev) = match other {
                EntryKind::Fifo => (SFlag::S_IFIFO, 0),
                EntryKind::Socket => (SFlag::S_IFSOCK, 0),
                EntryKind::CharDev(d) => (SFlag::S_IFCHR, *d),
                EntryKind::BlockDev(d) => (SFlag::S_IFBLK, *d),
                _ => unreachable!("handled above"),
            };
            if dev != 0 && !is_root() {
                return Err(FsError::DeviceNeedsRoot {
                    path: src_root.join(&s.rel),
                });
            }
            #[allow(clippy::useless_conversion)]
            nix::sys::stat::mknod(dst, kind, Mode::from_bits_truncate(0o600), dev.into())
                .map_err(nix_err(dst, "mknod"))?;
            apply_meta(dst, s, opts)
        }
    }
}

/// Copy the tree at `src` to `dst` and prove the copy, as documented in the module header.
///
/// `dst` must not exist; its parent must. Preserves for every entry: bytes, mode (including
/// setuid/setgid/sticky), atime and mtime to the nanosecond, owner when `preserve_owner`,
/// symlinks as the same symlink (never followed), hard links within the tree as hard links, and
/// fifos, sockets and (as root) device nodes. `dst` itself gets `src`'s mode and times.
/// Directory metadata is set after their contents, deepest first.
///
/// Durability: one `syncfs(2)` on the destination filesystem after everything is written. It
/// gives the guarantee a `fsync` of every file and directory gives (everything on stable
/// storage before the caller deletes the source), without tens of thousands of flushes.
///
/// Verification, which cannot be skipped: the destination is walked again and every byte of
/// every file read back (with its cached pages dropped first, so the device is read where the
/// kernel allows) and hashed; its manifest must equal the source's, whose hashes are those of the
/// bytes read during the copy. The source is then lstat'ed again: any entry added, removed or
/// modified (size, mtime, ctime, inode) since the copy started is [`FsError::SourceChanged`].
///
/// `progress(files_done, bytes_done)` is called during the copy phase, at most every few
/// milliseconds and once at its end. On error the partial `dst` is left for the caller to
/// remove; `src` is never modified.
pub fn copy_tree_verified(
    src: &Path,
    dst: &Path,
    opts: &CopyOptions,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<CopyStats, FsError> {
    let top = require_dir(src)?;
    check_dst_free(dst)?;
    let items = scan(src)?;
    let top_scan = scanned_from(src, src, &top)?;

    fs::DirBuilder::new()
        .mode(0o700)
        .create(dst)
        .map_err(io_err(dst, "mkdir"))?;

    // Directories, symlinks and special files first (in order, so parents exist), and the list
    // of regular files to copy: the first path of each hard-linked inode is copied, the others
    // are linked to it afterwards.
    let mut stats = CopyStats::default();
    let mut jobs: Vec<usize> = Vec::new();
    let mut links: Vec<(usize, usize)> = Vec::new();
    let mut first_of: HashMap<(u64, u64), usize> = HashMap::new();
    for (i, s) in items.iter().enumerate() {
        match s.entry.kind {
            EntryKind::File { .. } => {
                stats.files += 1;
                if s.nlink > 1 {
                    if let Some(&f) = first_of.get(&(s.dev, s.ino)) {
                        links.push((f, i));
                        continue;
                    }
                    first_of.insert((s.dev, s.ino), i);
                }
                jobs.push(i);
            }
            EntryKind::Dir => stats.dirs += 1,
            EntryKind::Symlink { .. } => stats.symlinks += 1,
            _ => {}
        }
        create_special(src, &dst.join(&s.rel), s, opts)?;
    }
    drop(first_of);

    let prog = Progress {
        cb: progress,
        files: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
    };
    let hashes = par_for(jobs.len(), &|j| {
        let s = &items[jobs[j]];
        let h = copy_file_data(&src.join(&s.rel), &dst.join(&s.rel), s, opts, &|n| {
            prog.tick(0, n)
        })?;
        prog.tick(1, 0);
        Ok(h)
    })?;
    for &(f, i) in &links {
        let (a, b) = (dst.join(&items[f].rel), dst.join(&items[i].rel));
        fs::hard_link(&a, &b).map_err(io_err(&b, "link"))?;
        prog.tick(1, 0);
    }
    prog.finish();
    stats.bytes = prog.bytes.load(Ordering::Relaxed);

    // Directory metadata last and deepest first: creating entries inside a directory bumps its
    // mtime, and a read-only directory mode would stop us creating them.
    for s in items.iter().rev() {
        if matches!(s.entry.kind, EntryKind::Dir) {
            apply_meta(&dst.join(&s.rel), s, opts)?;
        }
    }
    apply_meta(dst, &top_scan, opts)?;

    sync_tree(dst)?;

    // The source manifest: the copy-time scan with the hashes of the bytes actually copied.
    let mut src_items = items;
    let mut by_inode: HashMap<(u64, u64), [u8; 32]> = HashMap::new();
    for (j, h) in hashes {
        let s = &mut src_items[jobs[j]];
        set_hash(&mut s.entry, h);
        if s.nlink > 1 {
            by_inode.insert((s.dev, s.ino), h);
        }
    }
    for &(_, i) in &links {
        let s = &mut src_items[i];
        if let Some(h) = by_inode.get(&(s.dev, s.ino)) {
            set_hash(&mut s.entry, *h);
        }
    }
    drop(by_inode);
    drop(jobs);
    drop(links);

    group_links(&mut src_items);
    // Source first: a source that moved under us explains any mismatch better than the diff.
    check_source_unchanged(src, &top_scan, &src_items)?;
    verify_against(&src_items, src, dst, opts.preserve_owner, true)?;
    // Compare the top directories themselves too: mode and mtime of `dst` must be `src`'s.
    check_top(src, dst, &top_scan, opts.preserve_owner)?;
    Ok(stats)
}

/// Walk the source again (lstat only, streaming) and require every entry to be as scanned.
/// Relies on the walk order being manifest order; if it ever were not, the result would be a
/// spurious refusal, never a missed change.
fn check_source_unchanged(src: &Path, top: &Scanned, expected: &[Scanned]) -> Result<(), FsError> {
    let top_now = fs::symlink_metadata(src).map_err(io_err(src, "lstat"))?;
    if (top_now.ino(), top_now.ctime(), top_now.ctime_nsec()) != (top.ino, top.ctime.0, top.ctime.1)
    {
        return Err(FsError::SourceChanged {
            path: src.to_path_buf(),
            detail: "the directory itself was modified".into(),
        });
    }
    let changed = |p: &Path, detail: &str| FsError::SourceChanged {
        path: src.join(p),
        detail: detail.into(),
    };
    let mut exp = expected.iter();
    for e in walker(src) {
        let e = e.map_err(|e| walk_err(src, e))?;
        let m = e.metadata().map_err(|e| walk_err(src, e))?;
        let rel = e.path().strip_prefix(src).unwrap_or(e.path());
        let Some(Scanned {
            rel: p,
            entry: ent,
            ino,
            ctime,
            ..
        }) = exp.next()
        else {
            return Err(changed(rel, "appeared during the copy"));
        };
        if p != rel {
            return Err(changed(p, "the set of entries changed during the copy"));
        }
        let size = match ent.kind {
            EntryKind::File { size, .. } => size,
            _ => m.size(),
        };
        if (*ino, size, ent.mtime, *ctime)
            != (
                m.ino(),
                m.size(),
                (m.mtime(), m.mtime_nsec()),
                (m.ctime(), m.ctime_nsec()),
            )
        {
            return Err(changed(
                rel,
                "size, times or inode differ from when it was copied",
            ));
        }
    }
    if let Some(x) = exp.next() {
        return Err(changed(&x.rel, "vanished during the copy"));
    }
    Ok(())
}

fn check_top(src: &Path, dst: &Path, top: &Scanned, owner: bool) -> Result<(), FsError> {
    let d = fs::symlink_metadata(dst).map_err(io_err(dst, "lstat"))?;
    let ok = d.file_type().is_dir()
        && d.mode() & 0o7777 == top.entry.mode
        && (d.mtime(), d.mtime_nsec()) == top.entry.mtime
        && (!owner || (d.uid(), d.gid()) == (top.entry.uid, top.entry.gid));
    if ok {
        Ok(())
    } else {
        Err(FsError::VerifyMismatch {
            path: dst.to_path_buf(),
            detail: format!(
                "top directory mode/mtime/owner differ from {}",
                src.display()
            ),
        })
    }
}

/// How many destination entries are scanned and hashed at a time during verification: enough
/// to keep both workers busy, small enough that memory does not grow with the tree.
const VERIFY_BATCH: usize = 2048;

/// Most difference lines kept while verifying, so a wholly wrong tree cannot exhaust memory.
const MAX_DIFFS_KEPT: usize = 1000;

/// Walk `dst` (streaming, in batches hashed in parallel, reading every byte) and require every
/// entry to equal the sorted, hashed and link-grouped `expected` scan of the source. Memory stays
/// that of `expected` plus one batch. Relies on walk order being path order; were it not, the
/// result would be a spurious mismatch, never a missed one.
fn verify_against(
    expected: &[Scanned],
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
    let mut exp = expected.iter().peekable();
    let mut first_of: HashMap<(u64, u64), u64> = HashMap::new();
    let mut index = 0u64;
    let mut walk = walker(dst).into_iter();
    loop {
        let mut batch = Vec::with_capacity(VERIFY_BATCH);
        for e in walk.by_ref().take(VERIFY_BATCH) {
            let e = e.map_err(|e| walk_err(dst, e))?;
            let m = e.metadata().map_err(|e| walk_err(dst, e))?;
            batch.push(scanned_from(dst, e.path(), &m)?);
        }
        if batch.is_empty() {
            break;
        }
        hash_scanned(dst, &mut batch, drop_cache)?;
        for mut got in batch {
            // In a fresh copy every link of an inode is inside the tree, so nlink > 1 alone
            // says "grouped"; anything else is a real difference and is reported as one.
            if got.nlink > 1 && matches!(got.entry.kind, EntryKind::File { .. }) {
                got.entry.ino_group = Some(*first_of.entry((got.dev, got.ino)).or_insert(index));
            }
            index += 1;
            loop {
                match exp.peek() {
                    Some(x) if x.rel < got.rel => {
                        push(&mut d, format!("{:?}: only in the first tree", x.rel));
                        exp.next();
                    }
                    Some(x) if x.rel == got.rel => {
                        let mut lines = Vec::new();
                        diff_entry(&x.rel, &x.entry, &got.entry, compare_owner, &mut lines);
                        for l in lines {
                            push(&mut d, l);
                        }
                        exp.next();
                        break;
                    }
                    _ => {
                        push(&mut d, format!("{:?}: only in the second tree", got.rel));
                        break;
                    }
                }
            }
        }
    }
    for x in exp {
        push(&mut d, format!("{:?}: only in the first tree", x.rel));
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
    let mut items = scan(src)?;
    hash_scanned(src, &mut items, false)?;
    group_links(&mut items);
    verify_against(&items, src, dst, compare_owner, false)
}

/// `syncfs(2)` on the filesystem holding `path`, then fsync of its parent directory so that the
/// new entry for `path` itself is durable too (the parent may be on another filesystem).
fn sync_tree(path: &Path) -> Result<(), FsError> {
    let f = File::open(path).map_err(io_err(path, "open"))?;
    nix::unistd::syncfs(f.as_raw_fd()).map_err(nix_err(path, "syncfs"))?;
    fsync_dir(parent_or_dot(path))
}

fn check_dst_free(dst: &Path) -> Result<(), FsError> {
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

/// Copy one regular file (used for `~/.claude.json` across filesystems), preserving mode, times
/// and (with `preserve_owner`) owner; flush it and its directory to stable storage; read it back
/// and compare its hash with the bytes read from `src`. `dst` must not exist. On error a partial
/// `dst` is removed (it is ours: we created it exclusively); `src` is never touched.
pub fn copy_file_verified(src: &Path, dst: &Path, opts: &CopyOptions) -> Result<(), FsError> {
    let m = fs::symlink_metadata(src).map_err(io_err(src, "lstat"))?;
    if !m.file_type().is_file() {
        return Err(FsError::NotAFile {
            path: src.to_path_buf(),
        });
    }
    check_dst_free(dst)?;
    let s = scanned_from(parent_or_dot(src), src, &m)?;
    let result = (|| {
        let h = copy_file_data(src, dst, &s, opts, &|_| {})?;
        File::open(dst)
            .and_then(|f| f.sync_all())
            .map_err(io_err(dst, "fsync"))?;
        fsync_dir(parent_or_dot(dst))?;
        let back = hash_file(dst, true)?;
        let d = fs::symlink_metadata(dst).map_err(io_err(dst, "lstat"))?;
        let mut problems = Vec::new();
        if back != h {
            problems.push("content read back differs".to_string());
        }
        if d.size() != s_size(&s) {
            problems.push(format!("size {} != {}", d.size(), s_size(&s)));
        }
        if d.mode() & 0o7777 != s.entry.mode {
            problems.push(format!(
                "mode {:04o} != {:04o}",
                d.mode() & 0o7777,
                s.entry.mode
            ));
        }
        if (d.mtime(), d.mtime_nsec()) != s.entry.mtime {
            problems.push("mtime differs".into());
        }
        if opts.preserve_owner && (d.uid(), d.gid()) != (s.entry.uid, s.entry.gid) {
            problems.push("owner differs".into());
        }
        let now = fs::symlink_metadata(src).map_err(io_err(src, "lstat"))?;
        if (
            now.ino(),
            now.size(),
            now.mtime(),
            now.mtime_nsec(),
            now.ctime(),
            now.ctime_nsec(),
        ) != (
            s.ino,
            s_size(&s),
            s.entry.mtime.0,
            s.entry.mtime.1,
            s.ctime.0,
            s.ctime.1,
        ) {
            return Err(FsError::SourceChanged {
                path: src.to_path_buf(),
                detail: "modified during the copy".into(),
            });
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(FsError::VerifyMismatch {
                path: dst.to_path_buf(),
                detail: problems.join("; "),
            })
        }
    })();
    if result.is_err() {
        let _ = fs::remove_file(dst);
    }
    result
}

/// `rm -rf` that never follows symlinks: a symlink (at the top or anywhere inside) is unlinked,
/// its target left alone. A path that does not exist is not an error. Stops at the first failure
/// and names the path.
pub fn remove_tree(path: &Path) -> Result<(), FsError> {
    let m = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(path, "lstat")(e)),
    };
    if !m.file_type().is_dir() {
        return fs::remove_file(path).map_err(io_err(path, "unlink"));
    }
    // Unlinking is the bulk of the work and directories are independent, so the non-directory
    // entries of each directory are removed by a small worker pool; the (then empty) directories
    // go afterwards, deepest first.
    let mut dirs = vec![path.to_path_buf()];
    for e in walkdir::WalkDir::new(path)
        .follow_links(false)
        .follow_root_links(false)
        .min_depth(1)
    {
        let e = e.map_err(|e| walk_err(path, e))?;
        if e.file_type().is_dir() {
            dirs.push(e.into_path());
        }
    }
    par_for(dirs.len(), &|i| {
        let dir = &dirs[i];
        for e in fs::read_dir(dir).map_err(io_err(dir, "read directory"))? {
            let e = e.map_err(io_err(dir, "read directory"))?;
            let ft = e.file_type().map_err(io_err(&e.path(), "lstat"))?;
            if !ft.is_dir() {
                let p = e.path();
                fs::remove_file(&p).map_err(io_err(&p, "unlink"))?;
            }
        }
        Ok(())
    })?;
    // Walk order is parents before children, so reverse order is children first.
    for d in dirs.iter().rev() {
        fs::remove_dir(d).map_err(io_err(d, "rmdir"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::process::Command;

    fn set_mtime(p: &Path, sec: i64, nsec: i64) {
        nix::sys::stat::utimensat(
            None,
            p,
            &TimeSpec::new(sec, nsec),
            &TimeSpec::new(sec, nsec),
            UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }

    fn write(p: &Path, data: &[u8], mode: u32) {
        fs::write(p, data).unwrap();
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn mkdir(p: &Path, mode: u32) {
        fs::create_dir_all(p).unwrap();
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Pseudo-random bytes (xorshift), so that content differences are not hidden by repetition.
    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// A tree with everything that has broken naive copies: see the module brief.
    fn build_nasty(root: &Path, outside: &Path) {
        mkdir(root, 0o700);
        mkdir(outside, 0o755);
        write(&outside.join("outside.md"), b"outside", 0o644);
        write(
            &root.join(".credentials.json"),
            b"{\"token\":\"secret\"}",
            0o600,
        );
        write(&root.join("settings.json"), b"{}\n", 0o644);
        mkdir(&root.join("projects"), 0o700);
        mkdir(&root.join("projects/-home-u-repo"), 0o755);
        write(
            &root.join("projects/-home-u-repo/0001.jsonl"),
            b"{\"a\":1}\n",
            0o644,
        );
        mkdir(&root.join("local/node_modules/pkg"), 0o755);
        mkdir(&root.join("local/node_modules/.bin"), 0o755);
        write(
            &root.join("local/node_modules/pkg/bin.js"),
            b"#!/usr/bin/env node\n",
            0o755,
        );
        symlink("../pkg/bin.js", root.join("local/node_modules/.bin/x")).unwrap();
        symlink(outside, root.join("commands")).unwrap();
        symlink("/nonexistent/dangling/target", root.join("dangling")).unwrap();
        write(&root.join("new\nline"), b"newline name", 0o644);
        write(
            &root.join(OsStr::from_bytes(b"bad\xff")),
            b"non-utf8 name",
            0o640,
        );
        write(&root.join("with spaces.txt"), b"spaces", 0o644);
        mkdir(&root.join("links"), 0o755);
        write(&root.join("links/one"), b"hard linked", 0o644);
        fs::hard_link(root.join("links/one"), root.join("hard two")).unwrap();
        nix::unistd::mkfifo(&root.join("fifo"), Mode::from_bits_truncate(0o620)).unwrap();
        write(&root.join("empty"), b"", 0o600);
        write(&root.join("big.bin"), &noise(5 * 1024 * 1024, 7), 0o644);
        write(&root.join("setuid-exe"), b"#!/bin/sh\n", 0o4755);
        mkdir(&root.join("gdir"), 0o2775);
        write(&root.join("gdir/inner"), b"in setgid dir", 0o664);
        mkdir(&root.join("sticky"), 0o1777);
        let _sock = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
        // Distinct nanosecond mtimes on everything, deepest first so dirs keep theirs.
        let all: Vec<PathBuf> = walkdir::WalkDir::new(root)
            .contents_first(true)
            .into_iter()
            .map(|e| e.unwrap().path().to_path_buf())
            .collect();
        for (i, p) in all.iter().enumerate() {
            set_mtime(p, 1_600_000_000 + i as i64, 100_000_000 + i as i64 * 7919);
        }
    }

    fn tmp_in(dir: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("fsops-test")
            .tempdir_in(dir)
            .unwrap()
    }

    fn opts() -> CopyOptions {
        CopyOptions {
            preserve_owner: is_root(),
        }
    }

    fn lmeta(p: &Path) -> fs::Metadata {
        fs::symlink_metadata(p).unwrap()
    }

    /// Checks independent of `manifest`/`diff`, straight from lstat.
    fn independent_checks(src: &Path, dst: &Path) {
        for rel in [
            ".credentials.json",
            "big.bin",
            "empty",
            "setuid-exe",
            "gdir",
            "sticky",
            "projects",
            "fifo",
            "sock",
            "dangling",
            "commands",
        ] {
            let (a, b) = (lmeta(&src.join(rel)), lmeta(&dst.join(rel)));
            assert_eq!(a.mode(), b.mode(), "{rel}: mode incl. type");
            if !a.is_dir() {
                assert_eq!(a.size(), b.size(), "{rel}: size");
            }
            assert_eq!(
                (a.mtime(), a.mtime_nsec()),
                (b.mtime(), b.mtime_nsec()),
                "{rel}: mtime"
            );
            if is_root() {
                assert_eq!((a.uid(), a.gid()), (b.uid(), b.gid()), "{rel}: owner");
            }
        }
        let (a, b) = (lmeta(src), lmeta(dst));
        assert_eq!(a.mode(), b.mode(), "top dir mode");
        assert_eq!((a.mtime(), a.mtime_nsec()), (b.mtime(), b.mtime_nsec()));
        assert_eq!(lmeta(&dst.join(".credentials.json")).mode() & 0o7777, 0o600);
        assert_eq!(lmeta(&dst.join("gdir")).mode() & 0o7777, 0o2775);
        assert_eq!(lmeta(&dst.join("setuid-exe")).mode() & 0o7777, 0o4755);
        assert!(lmeta(&dst.join("fifo")).file_type().is_fifo());
        assert!(lmeta(&dst.join("sock")).file_type().is_socket());
        assert_eq!(
            fs::read_link(dst.join("local/node_modules/.bin/x")).unwrap(),
            PathBuf::from("../pkg/bin.js")
        );
        assert_eq!(
            fs::read(dst.join("local/node_modules/.bin/x")).unwrap(),
            b"#!/usr/bin/env node\n"
        );
        assert_eq!(
            fs::read_link(dst.join("commands")).unwrap(),
            fs::read_link(src.join("commands")).unwrap()
        );
        assert_eq!(
            fs::read_link(dst.join("dangling")).unwrap(),
            PathBuf::from("/nonexistent/dangling/target")
        );
        assert_eq!(fs::read(dst.join("new\nline")).unwrap(), b"newline name");
        assert_eq!(
            fs::read(dst.join(OsStr::from_bytes(b"bad\xff"))).unwrap(),
            b"non-utf8 name"
        );
        assert_eq!(fs::read(dst.join("with spaces.txt")).unwrap(), b"spaces");
        assert_eq!(
            fs::read(dst.join("big.bin")).unwrap(),
            fs::read(src.join("big.bin")).unwrap()
        );
        let (h1, h2) = (lmeta(&dst.join("links/one")), lmeta(&dst.join("hard two")));
        assert_eq!(h1.ino(), h2.ino(), "hard link kept");
        assert_eq!(h1.nlink(), 2);
        assert_ne!(
            lmeta(&dst.join("big.bin")).ino(),
            lmeta(&src.join("big.bin")).ino()
        );
    }

    fn copy_and_check(src_parent: &str, dst_parent: &str) {
        let s = tmp_in(src_parent);
        let d = tmp_in(dst_parent);
        let src = s.path().join("claude");
        build_nasty(&src, &s.path().join("dotfiles"));
        let before = manifest(&src).unwrap();
        let dst = d.path().join("config");
        let calls = AtomicU64::new(0);
        let st = copy_tree_verified(&src, &dst, &opts(), &|_, _| {
            calls.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
        assert!(calls.load(Ordering::Relaxed) >= 1);
        assert_eq!(st.files, 13);
        assert_eq!(st.symlinks, 3);
        assert_eq!(st.bytes, lmeta(&src.join("big.bin")).size() + 114);
        let after = manifest(&dst).unwrap();
        assert_eq!(diff(&before, &after), Vec::<String>::new());
        assert_eq!(before, after);
        assert_eq!(
            diff(&before, &manifest(&src).unwrap()),
            Vec::<String>::new()
        );
        assert!(after.entries[Path::new("hard two")].ino_group.is_some());
        assert_eq!(
            after.entries[Path::new("hard two")].ino_group,
            after.entries[Path::new("links/one")].ino_group
        );
        independent_checks(&src, &dst);
    }

    #[test]
    fn copy_within_tmp() {
        copy_and_check("/tmp", "/tmp");
    }

    #[test]
    fn copy_tmp_to_dev_shm() {
        let s = tmp_in("/tmp");
        assert!(
            !same_filesystem(s.path(), Path::new("/dev/shm")).unwrap(),
            "test needs two filesystems"
        );
        copy_and_check("/tmp", "/dev/shm");
    }

    #[test]
    fn copy_refuses_existing_destination_and_symlink_source() {
        let s = tmp_in("/tmp");
        let src = s.path().join("src");
        mkdir(&src, 0o700);
        write(&src.join("f"), b"x", 0o600);
        let dst = s.path().join("dst");
        mkdir(&dst, 0o700);
        let e = copy_tree_verified(&src, &dst, &opts(), &|_, _| {}).unwrap_err();
        assert!(matches!(e, FsError::DestinationExists { .. }), "{e}");
        assert!(e.to_string().contains("already exists"));
        let link = s.path().join("link");
        symlink(&src, &link).unwrap();
        let e = copy_tree_verified(&link, &s.path().join("d2"), &opts(), &|_, _| {}).unwrap_err();
        assert!(matches!(e, FsError::NotADirectory { .. }), "{e}");
        let e =
            copy_tree_verified(&src, &s.path().join("no/parent"), &opts(), &|_, _| {}).unwrap_err();
        assert!(matches!(e, FsError::Io { .. }), "{e}");
        assert!(!s.path().join("d2").exists());
    }

    /// Unmounts on drop so a failing assertion does not leave a mount behind.
    struct Mount(PathBuf);
    impl Drop for Mount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }

    #[test]
    fn disk_full_fails_and_leaves_source_alone() {
        let s = tmp_in("/tmp");
        let src = s.path().join("claude");
        build_nasty(&src, &s.path().join("dotfiles"));
        let mnt = s.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "none"])
            .arg(&mnt)
            .status()
            .map(|st| st.success())
            .unwrap_or(false);
        if !ok {
            eprintln!(
                "SKIPPED disk_full_fails_and_leaves_source_alone: cannot mount tmpfs (not root?)"
            );
            return;
        }
        let _guard = Mount(mnt.clone());
        let before = manifest(&src).unwrap();
        let (free, _) = free_space(&mnt.join("config")).unwrap();
        assert!(free <= 1024 * 1024);
        assert!(tree_stats(&src).unwrap().bytes > free);
        let e = copy_tree_verified(&src, &mnt.join("config"), &opts(), &|_, _| {}).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(&e, FsError::Io { source, .. } if source.raw_os_error() == Some(nix::libc::ENOSPC)),
            "{msg}"
        );
        assert!(msg.contains("free space"), "{msg}");
        assert_eq!(
            diff(&before, &manifest(&src).unwrap()),
            Vec::<String>::new()
        );
        remove_tree(&mnt.join("config")).unwrap();
        assert_eq!(fs::read_dir(&mnt).unwrap().count(), 0);
    }

    #[test]
    fn verify_catches_corruption_with_same_size_and_mtime() {
        let s = tmp_in("/tmp");
        let src = s.path().join("claude");
        build_nasty(&src, &s.path().join("dotfiles"));
        let dst = s.path().join("copy");
        copy_tree_verified(&src, &dst, &opts(), &|_, _| {}).unwrap();
        verify_trees(&src, &dst, is_root()).unwrap();

        let big = dst.join("big.bin");
        let m = lmeta(&big);
        let mut data = fs::read(&big).unwrap();
        data[3 * 1024 * 1024] ^= 1;
        fs::write(&big, &data).unwrap();
        set_mtime(&big, m.mtime(), m.mtime_nsec());
        let e = verify_trees(&src, &dst, is_root()).unwrap_err();
        assert!(matches!(&e, FsError::VerifyMismatch { .. }), "{e}");
        assert!(
            e.to_string().contains("\"big.bin\": content differs"),
            "{e}"
        );

        // Metadata-only corruption is caught too.
        data[3 * 1024 * 1024] ^= 1;
        fs::write(&big, &data).unwrap();
        set_mtime(&big, m.mtime(), m.mtime_nsec());
        verify_trees(&src, &dst, is_root()).unwrap();
        fs::set_permissions(
            dst.join(".credentials.json"),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let e = verify_trees(&src, &dst, is_root()).unwrap_err();
        assert!(e.to_string().contains("mode 0600 != 0644"), "{e}");
    }

    #[test]
    fn source_modified_during_copy_is_detected() {
        let s = tmp_in("/tmp");
        let src = s.path().join("claude");
        build_nasty(&src, &s.path().join("dotfiles"));
        let dst = s.path().join("copy");
        let done = AtomicBool::new(false);
        let target = src.join("settings.json");
        let e = copy_tree_verified(&src, &dst, &opts(), &|_, _| {
            if !done.swap(true, Ordering::SeqCst) {
                let mut f = OpenOptions::new().append(true).open(&target).unwrap();
                f.write_all(b"more").unwrap();
            }
        })
        .unwrap_err();
        assert!(matches!(&e, FsError::SourceChanged { .. }), "{e}");
        assert!(e.to_string().contains("settings.json"), "{e}");
    }

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

    #[test]
    fn tree_stats_counts_hard_links_once_and_follows_nothing() {
        let s = tmp_in("/tmp");
        let src = s.path().join("claude");
        build_nasty(&src, &s.path().join("dotfiles"));
        let st = tree_stats(&src).unwrap();
        assert_eq!(
            st,
            TreeStats {
                files: 13,
                dirs: 9,
                symlinks: 3,
                others: 2,
                bytes: 5 * 1024 * 1024 + 114,
            }
        );
    }

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

    #[test]
    fn remove_tree_never_follows_symlinks() {
        let s = tmp_in("/tmp");
        let src = s.path().join("claude");
        let outside = s.path().join("dotfiles");
        build_nasty(&src, &outside);
        let before = manifest(&outside).unwrap();
        remove_tree(&src).unwrap();
        assert!(fs::symlink_metadata(&src).is_err());
        assert_eq!(
            diff(&before, &manifest(&outside).unwrap()),
            Vec::<String>::new()
        );
        // A symlink at the top is unlinked, its target kept.
        let link = s.path().join("link");
        symlink(&outside, &link).unwrap();
        remove_tree(&link).unwrap();
        assert!(fs::symlink_metadata(&link).is_err());
        assert!(outside.join("outside.md").exists());
        // Missing is fine (rm -f semantics).
        remove_tree(&s.path().join("missing")).unwrap();
    }

    #[test]
    fn filesystem_queries() {
        let s = tmp_in("/tmp");
        assert!(same_filesystem(Path::new("/tmp"), Path::new("/tmp/x/y")).unwrap());
        assert!(same_filesystem(s.path(), &s.path().join("no/such/dir")).unwrap());
        assert!(!same_filesystem(Path::new("/tmp"), Path::new("/dev/shm")).unwrap());
        assert!(!same_filesystem(Path::new("/tmp"), Path::new("/dev/shm/a/b")).unwrap());
        assert!(same_filesystem(Path::new("/tmp/no-such-thing-fsops"), Path::new("/tmp")).is_err());
        assert_eq!(nearest_existing(&s.path().join("a/b/c")), s.path());
        assert_eq!(nearest_existing(s.path()), s.path());
        let dangling = s.path().join("dangling");
        symlink("/nonexistent", &dangling).unwrap();
        assert_eq!(nearest_existing(&dangling), dangling);
        assert_eq!(
            nearest_existing(Path::new("no-such-rel/x")),
            PathBuf::from(".")
        );
        let (bytes, inodes) = free_space(&s.path().join("not/yet")).unwrap();
        assert!(bytes > 0 && inodes > 0);
    }

    #[test]
    fn copy_single_file_across_filesystems() {
        let s = tmp_in("/tmp");
        let d = tmp_in("/dev/shm");
        let src = s.path().join(".claude.json");
        write(&src, &noise(300_000, 3), 0o600);
        set_mtime(&src, 1_700_000_000, 987_654_321);
        let dst = d.path().join(".claude.json");
        copy_file_verified(&src, &dst, &opts()).unwrap();
        assert_eq!(fs::read(&src).unwrap(), fs::read(&dst).unwrap());
        let m = lmeta(&dst);
        assert_eq!(m.mode() & 0o7777, 0o600);
        assert_eq!((m.mtime(), m.mtime_nsec()), (1_700_000_000, 987_654_321));
        let e = copy_file_verified(&src, &dst, &opts()).unwrap_err();
        assert!(matches!(e, FsError::DestinationExists { .. }), "{e}");
        let e = copy_file_verified(s.path(), &d.path().join("x"), &opts()).unwrap_err();
        assert!(matches!(e, FsError::NotAFile { .. }), "{e}");
    }

    #[test]
    fn device_nodes_copied_as_root() {
        let s = tmp_in("/tmp");
        let src = s.path().join("src");
        mkdir(&src, 0o755);
        let dev = nix::sys::stat::makedev(1, 3);
        if nix::sys::stat::mknod(
            &src.join("null"),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            dev,
        )
        .is_err()
        {
            eprintln!("SKIPPED device_nodes_copied_as_root: mknod not permitted here");
            return;
        }
        let dst = tmp_in("/dev/shm");
        let dst = dst.path().join("copy");
        copy_tree_verified(&src, &dst, &opts(), &|_, _| {}).unwrap();
        assert_eq!(lmeta(&dst.join("null")).rdev(), dev);
    }

    fn build_bulk(root: &Path, dirs: usize, per_dir: usize, avg: usize) {
        mkdir(root, 0o700);
        let chunk = noise(avg * 2, 11);
        for d in 0..dirs {
            let dir = root.join(format!("projects/-home-u-p{d}"));
            fs::create_dir_all(&dir).unwrap();
            for f in 0..per_dir {
                let n = (d * per_dir + f) * 7919 % (avg * 2);
                fs::write(dir.join(format!("{f:05}.jsonl")), &chunk[..n]).unwrap();
            }
        }
    }

    /// Peak resident set size of this process so far.
    fn rss_kib() -> u64 {
        let s = fs::read_to_string("/proc/self/status").unwrap();
        s.lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    fn drop_caches() {
        let _ = Command::new("sync").status();
        let _ = fs::write("/proc/sys/vm/drop_caches", "3");
    }

    /// `cargo test --release -- --ignored --nocapture perf_`: figures for the report.
    #[test]
    #[ignore]
    fn perf_copy_20k_files_200mb_vs_cp() {
        let s = tmp_in("/var/tmp");
        let a = s.path().join("a");
        build_bulk(&a, 200, 100, 10_000);
        let b = s.path().join("b");
        assert!(Command::new("cp")
            .arg("-a")
            .arg(&a)
            .arg(&b)
            .status()
            .unwrap()
            .success());
        let st = tree_stats(&a).unwrap();
        println!("tree: {st:?}");
        let d = tmp_in("/dev/shm");
        for cold in [false, true] {
            if cold {
                drop_caches();
            }
            let t = Instant::now();
            assert!(Command::new("cp")
                .arg("-a")
                .arg(&a)
                .arg(d.path().join("cp"))
                .status()
                .unwrap()
                .success());
            let t_cp = t.elapsed();
            assert!(Command::new("rm")
                .arg("-rf")
                .arg(&a)
                .status()
                .unwrap()
                .success());
            let t_cp_rm = t.elapsed();
            if cold {
                drop_caches();
            }
            let t = Instant::now();
            copy_tree_verified(&b, &d.path().join("ours"), &opts(), &|_, _| {}).unwrap();
            let t_ours = t.elapsed();
            remove_tree(&b).unwrap();
            let t_ours_rm = t.elapsed();
            println!(
                "{}: cp -a {:.3}s, cp -a && rm -rf {:.3}s | copy_tree_verified {:.3}s, + remove_tree {:.3}s",
                if cold { "cold cache" } else { "warm cache" },
                t_cp.as_secs_f64(),
                t_cp_rm.as_secs_f64(),
                t_ours.as_secs_f64(),
                t_ours_rm.as_secs_f64()
            );
            // Next round: sources back from the copies.
            assert!(Command::new("cp")
                .arg("-a")
                .arg(d.path().join("cp"))
                .arg(&a)
                .status()
                .unwrap()
                .success());
            assert!(Command::new("cp")
                .arg("-a")
                .arg(d.path().join("ours"))
                .arg(&b)
                .status()
                .unwrap()
                .success());
            remove_tree(&d.path().join("cp")).unwrap();
            remove_tree(&d.path().join("ours")).unwrap();
        }
    }

    #[test]
    #[ignore]
    fn perf_tree_stats_50k_and_manifest_memory_200k() {
        let s = tmp_in("/var/tmp");
        let r = s.path().join("r");
        build_bulk(&r, 500, 100, 1);
        let t = Instant::now();
        let st = tree_stats(&r).unwrap();
        println!(
            "tree_stats 50k files: {:.3}s {st:?}",
            t.elapsed().as_secs_f64()
        );
        drop_caches();
        let t = Instant::now();
        tree_stats(&r).unwrap();
        println!(
            "tree_stats 50k files, cold cache: {:.3}s",
            t.elapsed().as_secs_f64()
        );

        let r2 = s.path().join("r2");
        build_bulk(&r2, 2000, 100, 1);
        let before = rss_kib();
        let d = tmp_in("/dev/shm");
        let t = Instant::now();
        copy_tree_verified(&r2, &d.path().join("c"), &opts(), &|_, _| {}).unwrap();
        println!(
            "copy_tree_verified of 200k entries: {:.3}s, peak RSS +{} KiB",
            t.elapsed().as_secs_f64(),
            rss_kib().saturating_sub(before)
        );
        let before = rss_kib();
        let t = Instant::now();
        let m = manifest(&r2).unwrap();
        println!(
            "manifest of {} entries: {:.3}s, peak RSS +{} KiB",
            m.entries.len(),
            t.elapsed().as_secs_f64(),
            rss_kib().saturating_sub(before)
        );
        drop(m);
    }
}
