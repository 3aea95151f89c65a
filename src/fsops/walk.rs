//! Walking trees through directory descriptors: the sorted lstat scan (`scan`), the merge of
//! a scan with the tree on disk (`merge_walk`), the parallel directory walk (`par_walk`) and the
//! small scoped-thread pool the content work runs on (`par_for`).

#[allow(unused_imports)]
use super::*;

/// Files per unit of parallel work.
pub(super) const CHUNK: usize = 128;

pub(super) fn cstr(name: &[u8]) -> CString {
    // Names from readdir and paths from lstat never hold a NUL byte.
    CString::new(name).unwrap_or_default()
}

pub(super) const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Open a directory (never through a symlink at its last component), relative to `at` if given.
pub(super) fn open_dir(
    at: Option<BorrowedFd<'_>>,
    path: &Path,
    shown: &Path,
) -> Result<Dir, FsError> {
    Dir::openat(
        at.unwrap_or(nix::fcntl::AT_FDCWD),
        path,
        DIR_FLAGS,
        Mode::empty(),
    )
    .map_err(nix_err(shown, "open directory"))
}

/// `openat(2)` into a `File`.
pub(super) fn open_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: OFlag,
    mode: Mode,
) -> nix::Result<File> {
    let fd = nix::fcntl::openat(dir, name, flags | OFlag::O_CLOEXEC, mode)?;
    Ok(File::from(fd))
}

/// Open a file for reading without following a symlink and, where the kernel allows it (owner
/// or root), without updating its atime: copying or verifying should not modify what it reads.
pub(super) fn open_read_at(dir: BorrowedFd<'_>, name: &CStr) -> nix::Result<File> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW;
    match open_at(dir, name, flags | OFlag::O_NOATIME, Mode::empty()) {
        Err(nix::errno::Errno::EPERM) => open_at(dir, name, flags, Mode::empty()),
        r => r,
    }
}

/// The entries of an open directory (not `.` and `..`), each lstat'ed through the directory's
/// descriptor, sorted bytewise by name.
pub(super) fn read_sorted(
    dir: &mut Dir,
    shown: &dyn Fn() -> PathBuf,
) -> Result<Vec<(CString, FileStat)>, FsError> {
    let mut names = Vec::new();
    for e in dir.iter() {
        let e = e.map_err(|e| nix_err(&shown(), "read directory")(e))?;
        let n = e.file_name();
        if n.to_bytes() != b"." && n.to_bytes() != b".." {
            names.push(n.to_owned());
        }
    }
    names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let fd = dir.as_fd();
    names
        .into_iter()
        .map(|n| {
            let st = nix::sys::stat::fstatat(fd, n.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(|e| nix_err(&shown().join(OsStr::from_bytes(n.as_bytes())), "lstat")(e))?;
            Ok((n, st))
        })
        .collect()
}

pub(super) fn readlink_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    shown: &dyn Fn() -> PathBuf,
) -> Result<Vec<u8>, FsError> {
    nix::fcntl::readlinkat(dir, name)
        .map(|t| t.into_vec())
        .map_err(|e| nix_err(&shown(), "readlink")(e))
}

/// lstat walk of everything under `root` (a real directory), in manifest order, through
/// directory descriptors (`openat`/`fstatat`: no path is resolved twice). Reads no content.
/// Returns the tree and the root's own record.
pub(super) fn scan(root: &Path) -> Result<(Tree, Rec), FsError> {
    require_dir(root)?;
    let top = Rec::from_stat(&lstat(root)?);
    let mut t = Tree::default();
    struct Frame {
        dir: Dir,
        entries: std::vec::IntoIter<(CString, FileStat)>,
        idx: u32,
    }
    let mut dir = open_dir(None, root, root)?;
    let entries = read_sorted(&mut dir, &|| root.to_path_buf())?;
    let mut stack = vec![Frame {
        dir,
        entries: entries.into_iter(),
        idx: NONE,
    }];
    while let Some(f) = stack.last_mut() {
        let Some((name, st)) = f.entries.next() else {
            let done = stack.pop().map(|f| f.idx).unwrap_or(NONE);
            if done != NONE {
                t.recs[done as usize].end = t.recs.len() as u32;
            }
            continue;
        };
        let (fd, parent) = (f.dir.as_fd(), f.idx);
        let mut rec = Rec::from_stat(&st);
        rec.parent = parent;
        let kind = rec.kind;
        let shown = || {
            t.path_in(root, parent)
                .join(OsStr::from_bytes(name.as_bytes()))
        };
        let target = if kind == Kind::Symlink {
            Some(readlink_at(fd, &name, &shown)?)
        } else {
            None
        };
        let sub = if kind == Kind::Dir {
            let mut d = open_dir(
                Some(fd),
                Path::new(OsStr::from_bytes(name.as_bytes())),
                &shown(),
            )?;
            let e = read_sorted(&mut d, &shown)?;
            Some((d, e))
        } else {
            None
        };
        let i = t
            .push(rec, name.as_bytes(), target.as_deref())
            .map_err(|e| io_err(root, "scan")(e))?;
        if let Some((dir, e)) = sub {
            stack.push(Frame {
                dir,
                entries: e.into_iter(),
                idx: i,
            });
        }
    }
    Ok((t, top))
}

/// What [`merge_walk`] found at one position of the two sorted trees.
pub(super) enum Seen<'a> {
    /// In the scanned tree (`i`) and on disk (`st`, reachable as `name` in directory `dir`).
    Both {
        i: u32,
        st: &'a FileStat,
        dir: BorrowedFd<'a>,
        name: &'a CStr,
    },
    /// In the scanned tree only (the whole subtree of `i`, if a directory).
    Expected(u32),
    /// On disk only: `name` in the directory whose record is `parent`.
    Actual { parent: u32, name: &'a CStr },
}

/// Walk the tree on disk at `root` in manifest order alongside the scanned tree `t`, merging
/// the two by name directory by directory, and report every position to `f`. Descends where
/// both sides hold a directory. Streaming: memory is one directory listing per level.
pub(super) fn merge_walk(
    t: &Tree,
    root: &Path,
    f: &mut dyn FnMut(Seen<'_>) -> Result<(), FsError>,
) -> Result<(), FsError> {
    struct Frame {
        dir: Dir,
        actual: Vec<(CString, FileStat)>,
        pos: usize,
        next: u32,
        end: u32,
        idx: u32,
    }
    let mut dir = open_dir(None, root, root)?;
    let actual = read_sorted(&mut dir, &|| root.to_path_buf())?;
    let mut stack = vec![Frame {
        dir,
        actual,
        pos: 0,
        next: 0,
        end: t.recs.len() as u32,
        idx: NONE,
    }];
    while let Some(fr) = stack.last_mut() {
        let exp = (fr.next < fr.end).then_some(fr.next);
        let act = fr.actual.get(fr.pos);
        let order = match (exp, act) {
            (None, None) => {
                stack.pop();
                continue;
            }
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(j), Some((n, _))) => t.name(j).cmp(n.as_bytes()),
        };
        match order {
            std::cmp::Ordering::Less => {
                let j = fr.next;
                fr.next = t.next_sibling(j);
                f(Seen::Expected(j))?;
            }
            std::cmp::Ordering::Greater => {
                let parent = fr.idx;
                fr.pos += 1;
                let (name, _) = &fr.actual[fr.pos - 1];
                f(Seen::Actual { parent, name })?;
            }
            std::cmp::Ordering::Equal => {
                let j = fr.next;
                fr.next = t.next_sibling(j);
                fr.pos += 1;
                let fd = fr.dir.as_fd();
                let (name, st) = &fr.actual[fr.pos - 1];
                f(Seen::Both {
                    i: j,
                    st,
                    dir: fd,
                    name,
                })?;
                if t.recs[j as usize].kind == Kind::Dir && kind_of(mode_of(st)) == Kind::Dir {
                    let name = name.clone();
                    let shown = || t.path_in(root, j);
                    let mut d = open_dir(
                        Some(fd),
                        Path::new(OsStr::from_bytes(name.as_bytes())),
                        &shown(),
                    )?;
                    let actual = read_sorted(&mut d, &shown)?;
                    stack.push(Frame {
                        dir: d,
                        actual,
                        pos: 0,
                        next: j + 1,
                        end: t.recs[j as usize].end,
                        idx: j,
                    });
                }
            }
        }
    }
    Ok(())
}

/// Number of worker threads for content work: the cores we have, capped, since a copy is
/// bounded by storage as soon as there are more than a few.
pub(super) fn workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4)
}

/// Run `job(i)` for every `i` in `0..n` on a small pool of scoped threads. Stops handing out work
/// after the first error, and returns it. Results are collected per index.
pub(super) fn par_for<T: Send>(
    n: usize,
    job: &(dyn Fn(usize) -> Result<T, FsError> + Sync),
) -> Result<Vec<(usize, T)>, FsError> {
    #[cfg(feature = "bench-rayon")]
    if PAR_FOR_ON_RAYON.load(Ordering::Relaxed) {
        return par_for_rayon(n, job);
    }
    use std::sync::atomic::AtomicUsize;
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

/// With `--features bench-rayon` only, for the comparison in docs/BENCHMARKS.md: while true,
/// [`par_for`] runs on rayon instead of its own scoped threads. Off unless a benchmark turns it
/// on, so the test suite (`--all-features`) still runs the shipped `par_for`.
#[cfg(feature = "bench-rayon")]
pub static PAR_FOR_ON_RAYON: AtomicBool = AtomicBool::new(false);

/// [`par_for`] on rayon: the same `workers()` threads (one pool, built once), the same early
/// stop on an error, the results in index order.
#[cfg(feature = "bench-rayon")]
fn par_for_rayon<T: Send>(
    n: usize,
    job: &(dyn Fn(usize) -> Result<T, FsError> + Sync),
) -> Result<Vec<(usize, T)>, FsError> {
    use rayon::prelude::*;
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    let pool = POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(workers())
            .build()
            .expect("a rayon thread pool")
    });
    pool.install(|| {
        (0..n)
            .into_par_iter()
            .map(|i| job(i).map(|t| (i, t)))
            .collect()
    })
}

/// What [`par_walk`] calls for each directory: returns the subdirectories to visit, each with
/// its identity as seen from the directory that listed it ([`sub_dir_id`]).
pub(super) type DirVisitor<'a> =
    dyn Fn(&Path, &mut Dir) -> Result<Vec<(PathBuf, DirId)>, FsError> + Sync + 'a;

/// A directory's `(st_dev, st_ino)`: which directory a path named when it was listed.
pub(super) type DirId = (u64, u64);

/// `fstatat(dir, name)` (no follow): the identity of a subdirectory, as listed.
pub(super) fn sub_dir_id(
    dir: BorrowedFd<'_>,
    name: &CStr,
    shown: &dyn Fn() -> PathBuf,
) -> Result<DirId, FsError> {
    let st = nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|e| nix_err(&shown(), "lstat")(e))?;
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    Ok((st.st_dev as u64, st.st_ino as u64))
}

/// Open `path` (no symlink at its last component) and require it to be the directory `id`:
/// a path re-resolved later may go through a parent swapped for a link by someone who owns it
/// (issue 10 findings 3, 4). Checked on the opened descriptor, which is what is then used.
pub(super) fn open_dir_as(path: &Path, id: DirId) -> Result<Dir, FsError> {
    let d = open_dir(None, path, path)?;
    let st = nix::sys::stat::fstat(d.as_fd()).map_err(nix_err(path, "stat"))?;
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    if (st.st_dev as u64, st.st_ino as u64) != id {
        return Err(FsError::Io {
            path: path.to_path_buf(),
            op: "open directory",
            source: io::Error::other(
                "it is no longer the directory that was listed there (it, or a directory above \
                 it, was swapped, perhaps for a link); stopping rather than acting on what it \
                 points to now",
            ),
        });
    }
    Ok(d)
}

/// Visit every directory under `root` (root included) on a pool of `threads` threads: `visit`
/// gets each directory's path and open descriptor and returns the paths of the
/// subdirectories to visit next. Stops at the first error and returns it. Directories are
/// opened with `O_NOFOLLOW`: a directory swapped for a symlink mid-walk is an error, never
/// followed.
pub(super) fn par_walk(root: &Path, threads: usize, visit: &DirVisitor) -> Result<(), FsError> {
    struct Queue {
        dirs: Vec<(PathBuf, Option<DirId>)>,
        busy: usize,
    }
    let q = Mutex::new(Queue {
        dirs: vec![(root.to_path_buf(), None)],
        busy: 0,
    });
    let cv = std::sync::Condvar::new();
    let failed = AtomicBool::new(false);
    let first_err: Mutex<Option<FsError>> = Mutex::new(None);
    let lock = || q.lock().unwrap_or_else(|p| p.into_inner());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let dir = {
                    let mut g = lock();
                    loop {
                        if failed.load(Ordering::Relaxed) {
                            return;
                        }
                        if let Some(d) = g.dirs.pop() {
                            g.busy += 1;
                            break d;
                        }
                        if g.busy == 0 {
                            cv.notify_all();
                            return;
                        }
                        g = cv.wait(g).unwrap_or_else(|p| p.into_inner());
                    }
                };
                let (dir, id) = dir;
                let opened = match id {
                    Some(id) => open_dir_as(&dir, id),
                    None => open_dir(None, &dir, &dir),
                };
                let r = opened.and_then(|mut d| visit(&dir, &mut d));
                let mut g = lock();
                g.busy -= 1;
                match r {
                    Ok(subs) => g.dirs.extend(subs.into_iter().map(|(p, i)| (p, Some(i)))),
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        first_err
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                    }
                }
                cv.notify_all();
            });
        }
    });
    match first_err.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Threads for a metadata walk: waits on the disk when the cache is cold, so a few more than
/// the cores help there and cost nothing when warm.
pub(super) const WALK_THREADS: usize = 4;

/// Threads for unlinking: an ext4 unlink mostly waits (journal, bitmaps), so more threads than
/// cores pay off. Measured on 2 cores, 20,000 files: 1 thread 1.20 s, 2: 0.78 s, 4: 0.65 s,
/// 8: 0.57 s (`rm -rf`: 1.06 s).
pub(super) const UNLINK_THREADS: usize = 8;

/// The type of a directory entry: from `d_type` when the filesystem provides it, else lstat.
pub(super) fn entry_kind(
    dir: BorrowedFd<'_>,
    e: &nix::dir::Entry,
    shown: &dyn Fn() -> PathBuf,
) -> Result<Kind, FsError> {
    use nix::dir::Type;
    Ok(match e.file_type() {
        Some(Type::File) => Kind::File,
        Some(Type::Directory) => Kind::Dir,
        Some(Type::Symlink) => Kind::Symlink,
        Some(Type::Fifo) => Kind::Fifo,
        Some(Type::Socket) => Kind::Socket,
        Some(Type::CharacterDevice) => Kind::CharDev,
        Some(Type::BlockDevice) => Kind::BlockDev,
        None => {
            let st = nix::sys::stat::fstatat(dir, e.file_name(), AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(|err| nix_err(&shown(), "lstat")(err))?;
            kind_of(mode_of(&st))
        }
    })
}
