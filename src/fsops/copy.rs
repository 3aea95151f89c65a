//! The verified copy of a tree or a single file (see the module header of `fsops`).

#[allow(unused_imports)]
use super::*;

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

pub(super) fn ts(t: (i64, i64)) -> TimeSpec {
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    TimeSpec::new(t.0 as _, t.1 as _)
}

/// chown (optional), chmod, then times, in that order: chown clears setuid/setgid bits, and any
/// change would bump times we set earlier. Never follows a symlink.
pub(super) fn apply_meta(path: &Path, r: &Rec, opts: &CopyOptions) -> Result<(), FsError> {
    if opts.preserve_owner {
        std::os::unix::fs::lchown(path, Some(r.uid), Some(r.gid))
            .map_err(io_err(path, "lchown"))?;
    }
    if r.kind != Kind::Symlink {
        // The path was just created by us and is not a symlink, so chmod (which follows links)
        // acts on it.
        nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            path,
            Mode::from_bits_truncate(r.mode as _),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(nix_err(path, "chmod"))?;
    }
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &ts(r.atime()),
        &ts(r.mtime()),
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(nix_err(path, "set times"))
}

/// Which side of a copy an I/O error happened on.
pub(super) enum Side {
    Src(io::Error),
    Dst(io::Error),
    /// The source is not the length it had when scanned.
    Changed(String),
}

/// Copy `input` to `out` through `buf`, hashing the bytes on their way through (the source is
/// read once, while the data is hot in cache), then give `out` the owner (optional), mode and
/// times of `r` and close it, checking the close. The hash is of the exact bytes written, so a
/// later read-back of the destination proves what landed on disk. Reads exactly `r.size` bytes
/// (no extra read to see the end of a small file): a source shorter than that is
/// [`FsError::SourceChanged`] here, a longer one is caught by the callers' re-check of the
/// source's size and times after the copy.
///
/// A read/hash/write loop is used rather than `copy_file_range`: the bytes have to be hashed
/// anyway, and doing it on the way through reads the source once instead of twice. Across
/// filesystems (the only case where this tool copies instead of renaming) the kernel would fall
/// back to a splice through a pipe for `copy_file_range` anyway, so nothing is lost.
pub(super) fn copy_data(
    mut input: File,
    mut out: File,
    r: &Rec,
    opts: &CopyOptions,
    buf: &mut [u8],
    on_bytes: &dyn Fn(u64),
) -> Result<[u8; 32], Side> {
    let mut h = blake3::Hasher::new();
    let mut copied = 0u64;
    // Exactly the size scanned: bytes appended since then are not copied, and the re-check of
    // the source after the copy (size, mtime, ctime) refuses the copy for it.
    while copied < r.size {
        let want = buf
            .len()
            .min((r.size - copied).min(usize::MAX as u64) as usize);
        let n = match input.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Side::Src(e)),
        };
        out.write_all(&buf[..n]).map_err(Side::Dst)?;
        h.update(&buf[..n]);
        copied += n as u64;
        on_bytes(n as u64);
    }
    if copied != r.size {
        return Err(Side::Changed(format!(
            "{copied} bytes read where lstat said {}",
            r.size
        )));
    }
    if opts.preserve_owner {
        std::os::unix::fs::fchown(&out, Some(r.uid), Some(r.gid)).map_err(Side::Dst)?;
    }
    let fd = out.as_fd();
    nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(r.mode as _))
        .map_err(|e| Side::Dst(e.into()))?;
    nix::sys::stat::futimens(fd, &ts(r.atime()), &ts(r.mtime()))
        .map_err(|e| Side::Dst(e.into()))?;
    // Errors that a filesystem only reports at close (NFS, quota) must not be lost.
    nix::unistd::close(out.into_raw_fd()).map_err(|e| Side::Dst(e.into()))?;
    Ok(*h.finalize().as_bytes())
}

/// [`copy_data`]'s error, with the path of the side that failed.
pub(super) fn side_err(src: &Path, dst: &Path, e: Side) -> FsError {
    match e {
        Side::Changed(detail) => FsError::SourceChanged {
            path: src.to_path_buf(),
            detail,
        },
        Side::Src(e) => io_err(src, "read")(e),
        Side::Dst(e) => io_err(dst, "write")(e),
    }
}

/// Throttles progress callbacks: at most one every few milliseconds from any thread, so that
/// a UI can be driven directly without slowing the copy.
pub(super) struct Progress<'a> {
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

pub(super) fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Create entry `i` of `t` under `dst` unless it is a regular file (whose content is copied
/// later): directories (private 0700 until the end, so nothing is readable through them
/// mid-copy), symlinks, fifos, sockets and devices.
pub(super) fn create_special(
    src: &Path,
    dst: &Path,
    t: &Tree,
    i: u32,
    opts: &CopyOptions,
) -> Result<(), FsError> {
    let r = &t.recs[i as usize];
    if r.kind == Kind::File {
        return Ok(());
    }
    let p = t.path_in(dst, i);
    match r.kind {
        Kind::Dir => fs::DirBuilder::new()
            .mode(0o700)
            .create(&p)
            .map_err(io_err(&p, "mkdir")),
        Kind::Symlink => {
            std::os::unix::fs::symlink(OsStr::from_bytes(t.target(i)), &p)
                .map_err(io_err(&p, "symlink"))?;
            apply_meta(&p, r, opts)
        }
        other => {
            let (kind, dev) = match other {
                Kind::Fifo => (SFlag::S_IFIFO, 0),
                Kind::Socket => (SFlag::S_IFSOCK, 0),
                Kind::CharDev => (SFlag::S_IFCHR, r.size),
                _ => (SFlag::S_IFBLK, r.size),
            };
            if dev != 0 && !is_root() {
                return Err(FsError::DeviceNeedsRoot {
                    path: t.path_in(src, i),
                });
            }
            #[allow(clippy::useless_conversion)]
            nix::sys::stat::mknod(&p, kind, Mode::from_bits_truncate(0o600), dev.into())
                .map_err(nix_err(&p, "mknod"))?;
            apply_meta(&p, r, opts)
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
/// Speed: one metadata scan through directory descriptors, then the files are copied by a
/// small pool of workers (one per core, up to four), a chunk of one directory's files at a time,
/// each file opened by name relative to its directory (`openat`) and hashed as it is copied, so
/// the source is read once while the data is hot.
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
/// Memory: 128 bytes per entry plus its name (about 35 MiB for 200,000 files), nothing that
/// grows with file sizes.
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
    require_dir(src)?;
    check_dst_free(dst)?;
    let (mut t, top) = scan(src)?;

    fs::DirBuilder::new()
        .mode(0o700)
        .create(dst)
        .map_err(io_err(dst, "mkdir"))?;
    // Everything below `dst` is created and given its metadata through the directory we just
    // made, opened once (`/proc/self/fd/N/.`), never through its name again: its parent may
    // belong to the home's owner, who could otherwise swap it for a link to a directory of
    // root's between two of our system calls (issue 10 findings 2 and 3).
    let (staged, anchor) = anchor_new_dir(dst)?;
    let dst_name = dst;
    let dst: &Path = &anchor;

    // Directories, symlinks and special files first (in order, so parents exist). Of each
    // hard-linked inode the first path is copied, the others are linked to it afterwards.
    let mut stats = CopyStats::default();
    let mut first_of: HashMap<(u64, u64), u32> = HashMap::new();
    let mut links: Vec<(u32, u32)> = Vec::new();
    for i in 0..t.recs.len() as u32 {
        let r = &t.recs[i as usize];
        match r.kind {
            Kind::File => {
                stats.files += 1;
                if r.nlink > 1 {
                    match first_of.entry((r.dev, r.ino)) {
                        std::collections::hash_map::Entry::Occupied(o) => links.push((*o.get(), i)),
                        std::collections::hash_map::Entry::Vacant(v) => {
                            v.insert(i);
                        }
                    }
                }
            }
            Kind::Dir => stats.dirs += 1,
            Kind::Symlink => stats.symlinks += 1,
            _ => {}
        }
        create_special(src, dst, &t, i, opts)?;
    }
    drop(first_of);
    let second: HashSet<u32> = links.iter().map(|&(_, i)| i).collect();
    let chunks = t.file_chunks(|i| !second.contains(&i));
    drop(second);

    // Directories exist, no file data yet (the race of issue 10 findings 2 and 3).
    crate::failpoint::hook("copy-data");
    let prog = Progress {
        cb: progress,
        files: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
    };
    let create = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW;
    par_for(chunks.len(), &|c| {
        let (d, files) = &chunks[c];
        let (sp, dp) = (t.path_in(src, *d), t.path_in(dst, *d));
        // The source directory must be the one scanned: a parent swapped for a link since
        // would have root read files the home's owner cannot (finding 3).
        let sid = if *d == NONE {
            (top.dev, top.ino)
        } else {
            let r = &t.recs[*d as usize];
            (r.dev, r.ino)
        };
        let sdir = open_dir_as(&sp, sid)?;
        let ddir = open_dir(None, &dp, &dp)?;
        let mut buf = chunk_buf(&t, files);
        for &i in files {
            let r = &t.recs[i as usize];
            let name = cstr(t.name(i));
            let input = open_read_at(sdir.as_fd(), &name)
                .map_err(|e| nix_err(&t.path_in(src, i), "open")(e))?;
            let out = open_at(ddir.as_fd(), &name, create, Mode::from_bits_truncate(0o600))
                .map_err(|e| nix_err(&t.path_in(dst, i), "create")(e))?;
            let h = copy_data(input, out, r, opts, &mut buf, &|n| prog.tick(0, n))
                .map_err(|e| side_err(&t.path_in(src, i), &t.path_in(dst, i), e))?;
            r.set_hash(&h);
            prog.tick(1, 0);
        }
        Ok(())
    })?;
    drop(chunks);
    for &(f, i) in &links {
        let (a, b) = (t.path_in(dst, f), t.path_in(dst, i));
        fs::hard_link(&a, &b).map_err(io_err(&b, "link"))?;
        t.recs[i as usize].set_hash(&t.recs[f as usize].hash());
        prog.tick(1, 0);
    }
    drop(links);
    prog.finish();
    stats.bytes = prog.bytes.load(Ordering::Relaxed);

    crate::failpoint::hook("copy-meta");
    // Directory metadata last and deepest first: creating entries inside a directory bumps its
    // mtime, and a read-only directory mode would stop us creating them.
    for i in (0..t.recs.len() as u32).rev() {
        let r = &t.recs[i as usize];
        if r.kind == Kind::Dir {
            apply_meta(&t.path_in(dst, i), r, opts)?;
        }
    }
    apply_meta_fd(&staged, dst_name, &top, opts)?;
    let dst = dst_name;

    sync_tree(dst)?;

    group_links(&mut t);
    // Source first: a source that moved under us explains any mismatch better than the diff.
    check_source_unchanged(src, &top, &t)?;
    verify_against(&t, src, dst, opts.preserve_owner, true)?;
    // Compare the top directories themselves too: mode and mtime of `dst` must be `src`'s.
    check_top(src, dst, &top, opts.preserve_owner)?;
    Ok(stats)
}

/// Open a directory this process has just created (no link at its name) and check it is ours
/// (owned by our euid, so not one someone else put in its place): the directory, and a path
/// that names it whatever happens to its name (`/proc/self/fd/N/.`: the last component is `.`,
/// which `O_NOFOLLOW` opens, not the magic link).
fn anchor_new_dir(dst: &Path) -> Result<(Dir, PathBuf), FsError> {
    let d = open_dir(None, dst, dst)?;
    let st = nix::sys::stat::fstat(d.as_fd()).map_err(nix_err(dst, "stat"))?;
    if st.st_uid != nix::unistd::geteuid().as_raw() {
        return Err(FsError::Io {
            path: dst.to_path_buf(),
            op: "open directory",
            source: io::Error::other(
                "it was replaced right after it was created; stopping rather than writing into \
                 someone else's directory",
            ),
        });
    }
    let p = PathBuf::from(format!("/proc/self/fd/{}/.", d.as_raw_fd()));
    Ok((d, p))
}

/// [`apply_meta`] for a directory we hold open: owner, mode, times on its descriptor.
fn apply_meta_fd(d: &Dir, shown: &Path, r: &Rec, opts: &CopyOptions) -> Result<(), FsError> {
    let fd = d.as_fd();
    if opts.preserve_owner {
        nix::unistd::fchown(fd, Some(r.uid.into()), Some(r.gid.into()))
            .map_err(nix_err(shown, "chown"))?;
    }
    nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(r.mode as _))
        .map_err(nix_err(shown, "chmod"))?;
    nix::sys::stat::futimens(fd, &ts(r.atime()), &ts(r.mtime()))
        .map_err(nix_err(shown, "set times"))
}

/// Walk the source again (lstat only, streaming) and require every entry to be as scanned.
pub(super) fn check_source_unchanged(src: &Path, top: &Rec, t: &Tree) -> Result<(), FsError> {
    if !top.unchanged(&lstat(src)?) {
        return Err(FsError::SourceChanged {
            path: src.to_path_buf(),
            detail: "the directory itself was modified".into(),
        });
    }
    let changed = |path: PathBuf, detail: &str| FsError::SourceChanged {
        path,
        detail: detail.into(),
    };
    merge_walk(t, src, &mut |s| match s {
        Seen::Expected(j) => Err(changed(t.path_in(src, j), "vanished during the copy")),
        Seen::Actual { parent, name } => Err(changed(
            t.path_in(src, parent)
                .join(OsStr::from_bytes(name.to_bytes())),
            "appeared during the copy",
        )),
        Seen::Both { i, st, .. }
            if !t.recs[i as usize].unchanged(st)
                && !wrapper_lock_touched(t, src, i as usize, st) =>
        {
            Err(changed(
                t.path_in(src, i),
                "size, times or inode differ from when it was copied",
            ))
        }
        Seen::Both { .. } => Ok(()),
    })
}

/// The factory's agent wrapper opens `~/.claude/session.lock` with `9>` (O_TRUNC) to queue on
/// it: an agent starting while `migrate --wait` holds the lock and copies across filesystems
/// "truncates" the empty file, which moves only its times. That file, still empty, same inode,
/// at the top of the tree, is not a change to the data being copied (issue 13).
fn wrapper_lock_touched(t: &Tree, src: &Path, i: usize, st: &FileStat) -> bool {
    let r = &t.recs[i];
    let now = Rec::from_stat(st);
    r.kind == Kind::File
        && r.size == 0
        && now.kind == Kind::File
        && now.size == 0
        && now.ino == r.ino
        && t.path_in(src, i as u32) == src.join("session.lock")
}

pub(super) fn check_top(src: &Path, dst: &Path, top: &Rec, owner: bool) -> Result<(), FsError> {
    let d = fs::symlink_metadata(dst).map_err(io_err(dst, "lstat"))?;
    let ok = d.file_type().is_dir()
        && d.mode() & 0o7777 == top.mode as u32
        && (d.mtime(), d.mtime_nsec()) == top.mtime()
        && (!owner || (d.uid(), d.gid()) == (top.uid, top.gid));
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

/// Copy one regular file (used for `~/.claude.json` across filesystems), preserving mode, times
/// and (with `preserve_owner`) owner; flush it and its directory to stable storage; read it back
/// and compare its hash with the bytes read from `src`. `dst` must not exist. On error a partial
/// `dst` is removed (it is ours: we created it exclusively); `src` is never touched.
pub fn copy_file_verified(src: &Path, dst: &Path, opts: &CopyOptions) -> Result<(), FsError> {
    let st = lstat(src)?;
    let r = Rec::from_stat(&st);
    if r.kind != Kind::File {
        return Err(FsError::NotAFile {
            path: src.to_path_buf(),
        });
    }
    check_dst_free(dst)?;
    let mut created = false;
    let result = (|| {
        let input = open_noatime(src)?;
        let out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(dst)
            .map_err(io_err(dst, "create"))?;
        created = true;
        let mut buf = vec![0u8; (r.size as usize).saturating_add(1).clamp(4096, BUF_SIZE)];
        let h = copy_data(input, out, &r, opts, &mut buf, &|_| {})
            .map_err(|e| side_err(src, dst, e))?;
        File::open(dst)
            .and_then(|f| f.sync_all())
            .map_err(io_err(dst, "fsync"))?;
        fsync_dir(parent_or_dot(dst))?;
        let mut back = File::open(dst).map_err(io_err(dst, "open"))?;
        let back = hash_open(&mut back, &mut buf, true, None).map_err(io_err(dst, "read"))?;
        let d = fs::symlink_metadata(dst).map_err(io_err(dst, "lstat"))?;
        let mut problems = Vec::new();
        if back != h {
            problems.push("content read back differs".to_string());
        }
        if d.size() != r.size {
            problems.push(format!("size {} != {}", d.size(), r.size));
        }
        if d.mode() & 0o7777 != r.mode as u32 {
            problems.push(format!("mode {:04o} != {:04o}", d.mode() & 0o7777, r.mode));
        }
        if (d.mtime(), d.mtime_nsec()) != r.mtime() {
            problems.push("mtime differs".into());
        }
        if opts.preserve_owner && (d.uid(), d.gid()) != (r.uid, r.gid) {
            problems.push("owner differs".into());
        }
        if !r.unchanged(&lstat(src)?) {
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
    if result.is_err() && created {
        let _ = fs::remove_file(dst);
    }
    result
}
