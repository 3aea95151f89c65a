//! Resolution inside an agent's own root (`/proc/PID/root`): `openat2(RESOLVE_IN_ROOT)` and the
//! component-by-component walk that must agree with it; and the lock probe, run with the
//! agent's credentials on a thread that changes only its own.

use super::*;

pub(super) fn read_in_root(root: BorrowedFd, path: &Path) -> io::Result<Vec<u8>> {
    let fd = match openat2_in_root(root, path, OFlag::O_RDONLY) {
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            let dirs = walk_in_root(root, path.parent().unwrap_or(Path::new("/")))?;
            let at = dirs.last().map(|(fd, _)| fd.as_fd()).unwrap_or(root);
            let name = path.file_name().unwrap_or_default();
            let raw = nix::fcntl::openat(
                at.as_fd(),
                name,
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            raw
        }
        r => r?,
    };
    let mut v = Vec::new();
    io::Read::read_to_end(&mut fs::File::from(fd), &mut v)?;
    Ok(v)
}

/// `openat2(root, path, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: resolved by the kernel as if
/// `root` were `/`. `ENOSYS` on kernels before 5.6.
pub(super) fn openat2_in_root(root: BorrowedFd, path: &Path, flags: OFlag) -> io::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    loop {
        match nix::fcntl::openat2(root.as_fd(), path, how) {
            Ok(fd) => return Ok(fd),
            // The kernel asks for a retry when a rename raced the lookup.
            Err(nix::errno::Errno::EAGAIN) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Most symlinks followed in one resolution, as the kernel's limit.
pub(super) const MAX_SYMLINKS: usize = 40;

/// Resolve `path` inside `root` component by component, never following a symlink with the
/// kernel (`O_PATH | O_NOFOLLOW`; each link read with `readlinkat` and its target walked here,
/// an absolute one from `root`), `..` popping the directories walked (so never above `root`,
/// and from a mount's root to the directory it is mounted on). Returns the directories from
/// the first below `root` to the last, each with its name. The path must name a directory.
pub fn walk_in_root(root: BorrowedFd, path: &Path) -> io::Result<Vec<(OwnedFd, OsString)>> {
    let mut stack: Vec<(OwnedFd, OsString)> = Vec::new();
    let mut pending: Vec<Vec<u8>> = components(path.as_os_str().as_bytes());
    pending.reverse(); // a stack: the next component last
    let mut links = 0;
    while let Some(c) = pending.pop() {
        match c.as_slice() {
            b"" | b"." => continue,
            b".." => {
                stack.pop();
                continue;
            }
            _ => {}
        }
        let at = stack.last().map(|(fd, _)| fd.as_fd()).unwrap_or(root);
        let raw = nix::fcntl::openat(
            at.as_fd(),
            c.as_slice(),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let fd = raw;
        let st = fstat(fd.as_fd())?;
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => stack.push((fd, OsString::from_vec(c))),
            libc::S_IFLNK => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = nix::fcntl::readlinkat(fd.as_fd(), "")?;
                let target = target.as_bytes();
                if target.first() == Some(&b'/') {
                    stack.clear();
                }
                let mut parts = components(target);
                parts.reverse();
                pending.extend(parts);
            }
            _ => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
        }
    }
    Ok(stack)
}

pub(super) fn components(p: &[u8]) -> Vec<Vec<u8>> {
    p.split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// A config dir resolved in an agent's root.
pub struct Resolved {
    /// Its real path in that root (what Claude's `realpath` gives).
    pub real: PathBuf,
    pub dir: Id,
    pub parent: Id,
    /// The parent directory (where the lock is made), opened in that root.
    pub parent_fd: OwnedFd,
}

/// Resolve a config dir inside `root`. The kernel resolves it (`openat2` with
/// `RESOLVE_IN_ROOT`) and the walk names it; when both ran they must agree, else the tree
/// changed while it was read. Without `openat2` the walk alone decides.
pub fn resolve_in_root(root: BorrowedFd, path: &Path) -> io::Result<Resolved> {
    let walked = walk_in_root(root, path)?;
    let real = PathBuf::from(OsString::from_vec(
        std::iter::once(Vec::new())
            .chain(walked.iter().map(|(_, n)| n.as_bytes().to_vec()))
            .collect::<Vec<_>>()
            .join(&b'/'),
    ));
    let real = if real.as_os_str().is_empty() {
        PathBuf::from("/")
    } else {
        real
    };
    let n = walked.len();
    let walk_dir = match walked.last() {
        Some((fd, _)) => fstat(fd.as_fd())?,
        None => fstat(root.as_fd())?,
    };
    let parent_at = if n >= 2 {
        walked[n - 2].0.as_fd()
    } else {
        root
    };
    let walk_parent = fstat(parent_at.as_fd())?;
    let parent_fd = reopen_dir(parent_at)?;
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
    let kernel = openat2_in_root(root, path, flags).and_then(|d| {
        let mut up = path.as_os_str().to_os_string();
        up.push("/..");
        let p = openat2_in_root(root, Path::new(&up), flags)?;
        Ok((fstat(d.as_fd())?, fstat(p.as_fd())?))
    });
    let (dir, parent) = match kernel {
        Ok((d, p)) => {
            if id_of(&d) != id_of(&walk_dir) || id_of(&p) != id_of(&walk_parent) {
                return Err(io::Error::other(
                    "the directories changed while they were resolved (try again)",
                ));
            }
            (id_of(&d), id_of(&p))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => (id_of(&walk_dir), id_of(&walk_parent)),
        Err(e) => return Err(e),
    };
    Ok(Resolved {
        real,
        dir,
        parent,
        parent_fd,
    })
}

/// A readable descriptor of the directory `at` (an `O_PATH` one), for `mkdirat` and `futimens`.
pub(super) fn reopen_dir(at: BorrowedFd) -> io::Result<OwnedFd> {
    let raw = nix::fcntl::openat(
        at.as_fd(),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    Ok(raw)
}

/// `mkdir` + `rmdir` of `<real>.dci-probe-<our pid>`, a sibling of the config dir, in the
/// agent's view, with its credentials; the parent's mtime is put back (unless someone else
/// changed the directory meanwhile: [`without_trace`](crate::safefs::without_trace)). `None`
/// when its credentials cannot be taken (not root, and they are not ours): not run rather than
/// run as someone else.
pub(super) fn probe_lock(r: &Resolved, creds: &Creds, pid: u32) -> Option<Probe> {
    let mut name = r.real.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".dci-probe-{}", std::process::id()));
    let mut shown = r.real.as_os_str().to_os_string();
    shown.push(format!(".dci-probe-{}", std::process::id()));
    // Capabilities count in the user namespace they belong to: the agent's are only the same
    // as ours when it shares our user namespace; otherwise it acts with none over the host's
    // files.
    let caps = if same_userns(pid) { creds.cap_eff } else { 0 };
    let result = crate::safefs::without_trace(r.parent_fd.as_fd(), || {
        as_creds(creds, caps, || {
            nix::sys::stat::mkdirat(
                r.parent_fd.as_fd(),
                name.as_os_str(),
                Mode::from_bits_truncate(0o700),
            )?;
            nix::unistd::unlinkat(
                r.parent_fd.as_fd(),
                name.as_os_str(),
                nix::unistd::UnlinkatFlags::RemoveDir,
            )
        })
    });
    Some(match result.ok()? {
        Ok(()) => Probe {
            ok: true,
            path: show(Path::new(&shown)),
            error: None,
            errno: None,
        },
        Err(e) => Probe {
            ok: false,
            path: show(Path::new(&shown)),
            error: Some(err_text(&e)),
            errno: e.raw_os_error(),
        },
    })
}

#[repr(C)]
pub(super) struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(super) struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

pub(super) const CAP_V3: u32 = 0x2008_0522;

/// Run `f` on a fresh thread whose filesystem uid and gid, supplementary groups and effective
/// capabilities are `creds`' (`cap_eff`, within what we hold). Raw syscalls: glibc's
/// `setgroups` would apply to every thread of the process, these apply to the calling thread
/// only, and the thread ends with `f`. The outer `Err`: the credentials could not be taken (we
/// are not root and they are not ours), so `f` did not run.
pub(super) fn as_creds<T: Send>(
    creds: &Creds,
    cap_eff: u64,
    f: impl FnOnce() -> nix::Result<T> + Send,
) -> io::Result<io::Result<T>> {
    std::thread::scope(|s| {
        s.spawn(|| -> io::Result<io::Result<T>> {
            // SAFETY: plain syscalls on this thread's own credentials, with valid pointers.
            unsafe {
                let groups: Vec<libc::gid_t> = creds.groups.clone();
                if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) != 0 {
                    let e = io::Error::last_os_error();
                    // Not root: only our own groups are allowed, which is fine when they are.
                    let ours: Option<Vec<u32>> = nix::unistd::getgroups()
                        .ok()
                        .map(|g| g.into_iter().map(|g| g.as_raw()).collect());
                    if ours.as_deref() != Some(&groups[..]) {
                        return Err(e);
                    }
                }
                libc::syscall(libc::SYS_setfsgid, creds.fsgid);
                libc::syscall(libc::SYS_setfsuid, creds.fsuid);
                // setfs*id return the previous value and no error: read the new one back.
                let fsgid = libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32;
                let fsuid = libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32;
                if fsgid != creds.fsgid || fsuid != creds.fsuid {
                    return Err(io::Error::from_raw_os_error(libc::EPERM));
                }
                let mut hdr = CapHeader {
                    version: CAP_V3,
                    pid: 0,
                };
                let mut data = [CapData::default(); 2];
                if libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) != 0 {
                    return Err(io::Error::last_os_error());
                }
                let permitted = u64::from(data[0].permitted) | (u64::from(data[1].permitted) << 32);
                let eff = cap_eff & permitted;
                data[0].effective = eff as u32;
                data[1].effective = (eff >> 32) as u32;
                if libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(f().map_err(io::Error::from))
        })
        .join()
        .unwrap_or_else(|_| Ok(Err(io::Error::other("the probe thread panicked"))))
    })
}
