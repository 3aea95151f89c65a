//! Processes in other mount namespaces (containers of the old layout) that bind-mount
//! `~/.claude`, or a directory inside it.
//!
//! A bind mount pins the directory's inode, not its name. On one filesystem a `rename` of
//! `~/.claude` leaves such a container's view intact (its mount follows the move). Across
//! filesystems the migration copies and then removes the source, and the container would keep
//! writing into the removed directory: credentials refreshed there are lost.
//!
//! Detection compares what the kernel says, not names: the host's view of `~/.claude` is its
//! device and its path relative to the root of its filesystem (from the mount `/proc/self/fdinfo`
//! names for a descriptor on it, and that mount's root in `/proc/self/mountinfo`); a mount in
//! another namespace shows `~/.claude` when its `major:minor` is that device and its root is that
//! path or a path under it. A directory merely named like `~/.claude` on another filesystem, or a
//! removed one (`//deleted`), does not match.

use crate::pathser::show;
use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, Mode};
use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum MountsError {
    #[error("{op} '{}': {source}", show(path))]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot find the mount of '{}' in /proc/self/mountinfo (mount id {mnt_id})",
        show(path)
    )]
    NoMount { path: PathBuf, mnt_id: u64 },
}

fn io(path: &Path, op: &'static str, e: std::io::Error) -> MountsError {
    MountsError::Io {
        path: path.to_path_buf(),
        op,
        source: e,
    }
}

/// One line of a `mountinfo` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountLine {
    pub id: u64,
    pub major: u64,
    pub minor: u64,
    /// The mount's root: the path, inside its filesystem, of the directory mounted (raw bytes,
    /// unescaped). A removed directory shows with a `//deleted` suffix.
    pub root: Vec<u8>,
    /// Where it is mounted, in that namespace (raw bytes, unescaped).
    pub mount_point: Vec<u8>,
    pub fstype: String,
}

/// `\040` and friends (space, tab, newline, backslash) back to bytes.
pub fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if v <= 255 {
                out.push(v as u8);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw`.
pub fn parse_mountinfo_line(line: &str) -> Option<MountLine> {
    let mut w = line.split(' ');
    let id = w.next()?.parse().ok()?;
    let _parent = w.next()?;
    let mut dev = w.next()?.split(':');
    let major = dev.next()?.parse().ok()?;
    let minor = dev.next()?.parse().ok()?;
    let root = unescape(w.next()?);
    let mount_point = unescape(w.next()?);
    let _opts = w.next()?;
    // Optional fields up to the separator.
    for f in w.by_ref() {
        if f == "-" {
            break;
        }
    }
    let fstype = w.next()?.to_string();
    Some(MountLine {
        id,
        major,
        minor,
        root,
        mount_point,
        fstype,
    })
}

pub fn parse_mountinfo(text: &str) -> Vec<MountLine> {
    text.lines().filter_map(parse_mountinfo_line).collect()
}

/// How this process sees `~/.claude`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostView {
    pub path: PathBuf,
    /// `st_dev` of the directory, as `(major, minor)`.
    pub dev: (u64, u64),
    /// The `major:minor` of its mount in mountinfo (differs from `dev` on btrfs subvolumes).
    pub mount_dev: (u64, u64),
    /// Its path relative to the root of its filesystem, e.g. `/home/alice/.claude`, or
    /// `/alice/.claude` when `/home` is its own filesystem.
    pub fs_path: Vec<u8>,
}

/// Join a mount's root and a path below its mount point, as a path in the filesystem.
fn below(root: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut out = root.to_vec();
    for part in rest.split(|c| *c == b'/').filter(|p| !p.is_empty()) {
        if out.last() != Some(&b'/') {
            out.push(b'/');
        }
        out.extend_from_slice(part);
    }
    out
}

/// `rest` if `p` is `prefix` or below it (component-wise), as the part after it.
fn strip_dir_prefix<'a>(p: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    if prefix == b"/" {
        return Some(p.strip_prefix(b"/").unwrap_or(p));
    }
    let rest = p.strip_prefix(prefix)?;
    if rest.is_empty() {
        Some(rest)
    } else {
        rest.strip_prefix(b"/")
    }
}

/// The host's view of the directory `dir` (opened without following a symlink).
pub fn host_view(dir: &Path) -> Result<HostView, MountsError> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = nix::fcntl::openat(nix::fcntl::AT_FDCWD, dir, flags, Mode::empty())
        .map_err(|e| io(dir, "open", std::io::Error::from_raw_os_error(e as i32)))?;
    let st = fstat(fd.as_fd())
        .map_err(|e| io(dir, "fstat", std::io::Error::from_raw_os_error(e as i32)))?;
    let raw = fd.as_raw_fd();
    let info_path = PathBuf::from(format!("/proc/self/fdinfo/{raw}"));
    let info = std::fs::read_to_string(&info_path).map_err(|e| io(&info_path, "read", e))?;
    let mnt_id: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io(&info_path, "parse", std::io::Error::other("no mnt_id line")))?;
    let real = std::fs::read_link(format!("/proc/self/fd/{raw}"))
        .map_err(|e| io(dir, "readlink /proc/self/fd of", e))?;
    let mi = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| io(Path::new("/proc/self/mountinfo"), "read", e))?;
    let m = parse_mountinfo(&mi)
        .into_iter()
        .find(|m| m.id == mnt_id)
        .ok_or_else(|| MountsError::NoMount {
            path: dir.to_path_buf(),
            mnt_id,
        })?;
    let rest = strip_dir_prefix(real.as_os_str().as_bytes(), &m.mount_point).ok_or_else(|| {
        MountsError::NoMount {
            path: dir.to_path_buf(),
            mnt_id,
        }
    })?;
    Ok(HostView {
        path: dir.to_path_buf(),
        dev: (
            nix::sys::stat::major(st.st_dev),
            nix::sys::stat::minor(st.st_dev),
        ),
        mount_dev: (m.major, m.minor),
        fs_path: below(&m.root, rest),
    })
}

/// A process in another mount namespace that has `~/.claude` (or a directory in it) mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignMount {
    /// The first (lowest) pid of that mount namespace: a container's init, usually.
    pub pid: u32,
    /// `/proc/PID/comm`.
    pub comm: String,
    /// How many processes share that namespace.
    pub processes: usize,
    /// Where it is mounted, inside the container.
    pub mount_point: PathBuf,
    /// Which directory of `~/.claude` is mounted there: empty for `~/.claude` itself.
    pub subdir: PathBuf,
    /// The container id (64 hex digits) from `/proc/PID/cgroup`, when its cgroup path shows one
    /// (docker, containerd, CRI-O, podman).
    pub container: Option<String>,
}

impl ForeignMount {
    /// `pid 4242 (sleep), container 3f2a1b9c8d7e, has ~/.claude mounted at /home/agent/.claude`.
    pub fn describe(&self) -> String {
        let what = if self.subdir.as_os_str().is_empty() {
            "~/.claude".to_string()
        } else {
            format!("~/.claude/{}", show(&self.subdir))
        };
        let ctr = self
            .container
            .as_deref()
            .map(|c| format!(", container {}", &c[..12.min(c.len())]))
            .unwrap_or_default();
        let others = if self.processes > 1 {
            format!(
                " and {} more process(es) of its namespace",
                self.processes - 1
            )
        } else {
            String::new()
        };
        format!(
            "pid {} ({}){others}{ctr}, with {what} mounted at {}",
            self.pid,
            self.comm,
            show(&self.mount_point)
        )
    }
}

/// The result of a scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    pub mounts: Vec<ForeignMount>,
    /// Processes whose mount namespace could not be read (no permission): not checked.
    pub unreadable: usize,
}

/// Which part of `~/.claude` a mount line shows, if it shows it.
pub fn shows(view: &HostView, m: &MountLine) -> Option<PathBuf> {
    if (m.major, m.minor) != view.dev && (m.major, m.minor) != view.mount_dev {
        return None;
    }
    // A directory removed since it was mounted: not ours, whatever it was called.
    if m.root.ends_with(b"//deleted") || m.root.ends_with(b" (deleted)") {
        return None;
    }
    let rest = strip_dir_prefix(&m.root, &view.fs_path)?;
    Some(PathBuf::from(std::ffi::OsString::from_vec(rest.to_vec())))
}

fn mnt_ns(pid: &str) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok()
}

/// Processes in other mount namespaces with `dir` (`~/.claude`, a real directory) or a
/// directory inside it mounted. One entry per namespace and mount.
pub fn scan(dir: &Path) -> Result<Scan, MountsError> {
    let view = host_view(dir)?;
    let mine = mnt_ns("self");
    let mut by_ns: BTreeMap<PathBuf, Vec<u32>> = BTreeMap::new();
    let mut unreadable = 0;
    let procs = std::fs::read_dir("/proc").map_err(|e| io(Path::new("/proc"), "read", e))?;
    for p in procs.flatten() {
        let Some(name) = p.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let Ok(pid) = name.parse::<u32>() else {
            continue;
        };
        match mnt_ns(&name) {
            Some(ns) if Some(&ns) == mine.as_ref() => {}
            Some(ns) => by_ns.entry(ns).or_default().push(pid),
            // Gone meanwhile, or not ours to look at.
            None => {
                if std::fs::symlink_metadata(format!("/proc/{pid}")).is_ok() {
                    unreadable += 1;
                }
            }
        }
    }
    let mut out = Vec::new();
    for pids in by_ns.values_mut() {
        pids.sort_unstable();
        // The first pid whose mountinfo can still be read speaks for the namespace.
        let Some((pid, text)) = pids.iter().find_map(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
                .ok()
                .map(|t| (*pid, t))
        }) else {
            continue;
        };
        let mut seen = Vec::new();
        for m in parse_mountinfo(&text) {
            let Some(subdir) = shows(&view, &m) else {
                continue;
            };
            if seen.contains(&m.mount_point) {
                continue;
            }
            seen.push(m.mount_point.clone());
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .unwrap_or_default()
                .trim_end()
                .to_string();
            let container = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .ok()
                .and_then(|c| crate::agents::container_of(&c))
                .map(|c| c.id);
            out.push(ForeignMount {
                pid,
                comm,
                processes: pids.len(),
                mount_point: PathBuf::from(std::ffi::OsString::from_vec(m.mount_point)),
                subdir,
                container,
            });
        }
    }
    out.sort_by_key(|m| m.pid);
    Ok(Scan {
        mounts: out,
        unreadable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        let m = parse_mountinfo_line(
            "36 35 98:0 /home/a\\040b/.claude /home/agent/.claude rw,noatime master:1 shared:2 - ext4 /dev/root rw",
        )
        .unwrap();
        assert_eq!(m.id, 36);
        assert_eq!((m.major, m.minor), (98, 0));
        assert_eq!(m.root, b"/home/a b/.claude");
        assert_eq!(m.mount_point, b"/home/agent/.claude");
        assert_eq!(m.fstype, "ext4");
        assert_eq!(unescape("a\\012b\\134c\\011"), b"a\nb\\c\t");
        assert_eq!(unescape("x\\9"), b"x\\9");
        assert!(parse_mountinfo_line("nonsense").is_none());
    }

    fn view() -> HostView {
        HostView {
            path: "/home/alice/.claude".into(),
            dev: (254, 0),
            mount_dev: (254, 0),
            fs_path: b"/alice/.claude".to_vec(),
        }
    }

    fn line(dev: (u64, u64), root: &str) -> MountLine {
        MountLine {
            id: 1,
            major: dev.0,
            minor: dev.1,
            root: root.as_bytes().to_vec(),
            mount_point: b"/mnt".to_vec(),
            fstype: "ext4".into(),
        }
    }

    #[test]
    fn device_and_root_decide() {
        let v = view();
        assert_eq!(
            shows(&v, &line((254, 0), "/alice/.claude")),
            Some("".into())
        );
        assert_eq!(
            shows(&v, &line((254, 0), "/alice/.claude/projects/x")),
            Some("projects/x".into())
        );
        // A sibling with a longer name, the parent, another device, a removed directory.
        assert_eq!(shows(&v, &line((254, 0), "/alice/.claude-old")), None);
        assert_eq!(shows(&v, &line((254, 0), "/alice")), None);
        assert_eq!(shows(&v, &line((0, 27), "/alice/.claude")), None);
        assert_eq!(shows(&v, &line((254, 0), "/alice/.claude//deleted")), None);
        // btrfs: st_dev of a subvolume differs from its mount's major:minor; either matches.
        let mut b = view();
        b.dev = (0, 40);
        b.mount_dev = (0, 33);
        assert_eq!(shows(&b, &line((0, 33), "/alice/.claude")), Some("".into()));
        assert_eq!(shows(&b, &line((0, 40), "/alice/.claude")), Some("".into()));
    }

    #[test]
    fn fs_path_below_a_mount() {
        assert_eq!(below(b"/", b"home/a/.claude"), b"/home/a/.claude");
        assert_eq!(below(b"/data", b"a/.claude"), b"/data/a/.claude");
        assert_eq!(below(b"/data", b""), b"/data");
        assert_eq!(strip_dir_prefix(b"/home/a", b"/home"), Some(&b"a"[..]));
        assert_eq!(strip_dir_prefix(b"/homer", b"/home"), None);
        assert_eq!(strip_dir_prefix(b"/home", b"/home"), Some(&b""[..]));
        assert_eq!(strip_dir_prefix(b"/x/y", b"/"), Some(&b"x/y"[..]));
    }
}
