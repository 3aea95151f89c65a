//! `rewrite-links`: a relative symlink in `~/.claude` whose target lies outside `~/.claude`
//! (GNU stow's `CLAUDE.md -> ../dotfiles/CLAUDE.md`) would, once the tree is the config dir,
//! resolve against the shared dir instead. After the move, each such link is rewritten to the
//! absolute path it resolved to from its old place; links that stay inside the tree keep their
//! text byte for byte. Undo writes the original text back, byte for byte.
//!
//! Everything goes through directory descriptors opened without following symlinks (the tree
//! belongs to the home's owner): the link's parent is reached with `openat(O_NOFOLLOW)` from
//! the config dir, the new link is made with `symlinkat` under a temporary name, given the old
//! link's owner and times, and `renameat`'d over the old name in that same directory, whose
//! mtime is then put back. At every instant the name is the old link or the new one.

use super::{Ctx, Record, Res, Save, StepError, StepKind, Wire};
use crate::pathser::{self, show};
use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, futimens, utimensat, FileStat, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;
use serde::{Deserialize, Serialize};
use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// This family's undo record: nothing beyond "started" (the plan holds both texts).
type R = Started;

/// One link to rewrite: where it is (relative to the tree's root), its text before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRewrite {
    #[serde(with = "pathser::path")]
    pub path: PathBuf,
    #[serde(with = "pathser::path")]
    pub old: PathBuf,
    #[serde(with = "pathser::path")]
    pub new: PathBuf,
    /// The mtime of the link's directory when planned (a rename and a verified copy both keep
    /// it): set again after each swap, so a crash between the rename and that reset is repaired
    /// by the resumed run or the undo.
    pub dir_mtime: (i64, i64),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewriteLinks {
    /// The tree the links are in (the config dir, after the move).
    #[serde(with = "pathser::path")]
    pub dir: PathBuf,
    pub links: Vec<LinkRewrite>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Started {
    pub recorded: bool,
}

impl Record for Started {
    fn from_wire(w: &Wire) -> Result<Self, StepError> {
        Ok(Started {
            recorded: w.recorded,
        })
    }
    fn to_wire(&self) -> Wire {
        Wire {
            recorded: self.recorded,
            ..Wire::default()
        }
    }
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

fn cstr(b: &[u8]) -> Result<CString, StepError> {
    CString::new(b).map_err(|_| StepError::new("a path holds a NUL byte"))
}

fn nix_io(what: &str, path: &Path, e: nix::Error) -> StepError {
    StepError::new(format!("cannot {what} '{}': {e}", show(path)))
}

/// The directory holding `rel` inside `root`, opened component by component without
/// following a symlink anywhere below `root`; and the link's own name.
fn open_parent(root: &Path, rel: &Path) -> Result<(Dir, CString), StepError> {
    let mut dir = Dir::open(root, DIR_FLAGS, Mode::empty()).map_err(|e| nix_io("open", root, e))?;
    let comps: Vec<&OsStr> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    let Some((name, parents)) = comps.split_last() else {
        return Err(StepError::new(format!(
            "'{}' is not a path inside the tree",
            show(rel)
        )));
    };
    let mut shown = root.to_path_buf();
    for c in parents {
        shown.push(c);
        dir = Dir::openat(dir.as_fd(), *c, DIR_FLAGS, Mode::empty())
            .map_err(|e| nix_io("open the directory", &shown, e))?;
    }
    Ok((dir, cstr(name.as_bytes())?))
}

fn ts(sec: i64, nsec: i64) -> TimeSpec {
    TimeSpec::new(sec, nsec)
}

/// Replace the link `name` in `dir` whose text is `from` by one whose text is `to`, keeping
/// the link's owner and times and the directory's mtime. Already `to`: nothing to do.
fn swap(
    dir: &Dir,
    name: &CString,
    (from, to): (&Path, &Path),
    dir_mtime: (i64, i64),
    shown: &Path,
) -> Res {
    let fd = dir.as_fd();
    let st: FileStat = fstatat(fd, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|e| nix_io("lstat", shown, e))?;
    if st.st_mode & nix::libc::S_IFMT != nix::libc::S_IFLNK {
        return Err(StepError::new(format!(
            "'{}' is no longer a symlink; it is left as it is",
            show(shown)
        )));
    }
    let now = nix::fcntl::readlinkat(fd, name.as_c_str())
        .map_err(|e| nix_io("read the link", shown, e))?;
    let now = Path::new(&now);
    if now == to {
        return put_back_mtime(fd, dir_mtime, shown);
    }
    if now != from {
        return Err(StepError::new(format!(
            "'{}' now points to '{}', neither '{}' nor '{}': it changed since the plan, and is left as it is",
            show(shown),
            show(now),
            show(from),
            show(to)
        )));
    }
    let mut tmp = b".".to_vec();
    tmp.extend_from_slice(name.as_bytes());
    tmp.extend_from_slice(format!(".dci-link-{}", std::process::id()).as_bytes());
    let tmp = cstr(&tmp)?;
    // A leftover of an earlier attempt of ours (same pid only after a pid wrap: harmless).
    let _ = nix::unistd::unlinkat(fd, tmp.as_c_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
    nix::unistd::symlinkat(to, fd, tmp.as_c_str())
        .map_err(|e| nix_io("create the new link for", shown, e))?;
    let finish = || -> Result<(), nix::Error> {
        if nix::unistd::geteuid().is_root() {
            nix::unistd::fchownat(
                fd,
                tmp.as_c_str(),
                Some(st.st_uid.into()),
                Some(st.st_gid.into()),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )?;
        }
        utimensat(
            fd,
            tmp.as_c_str(),
            &ts(st.st_atime, st.st_atime_nsec),
            &ts(st.st_mtime, st.st_mtime_nsec),
            UtimensatFlags::NoFollowSymlink,
        )?;
        nix::fcntl::renameat(fd, tmp.as_c_str(), fd, name.as_c_str())
    };
    if let Err(e) = finish() {
        let _ = nix::unistd::unlinkat(fd, tmp.as_c_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
        return Err(nix_io("rewrite the link", shown, e));
    }
    put_back_mtime(fd, dir_mtime, shown)
}

/// The directory's entries changed (a rename within it): put its planned mtime back (atime
/// left as it is), then make it durable.
fn put_back_mtime(fd: BorrowedFd<'_>, (sec, nsec): (i64, i64), shown: &Path) -> Res {
    let omit = TimeSpec::new(0, nix::libc::UTIME_OMIT);
    futimens(fd, &omit, &ts(sec, nsec))
        .map_err(|e| nix_io("set the mtime of the directory of", shown, e))?;
    nix::unistd::fsync(fd).map_err(|e| nix_io("sync the directory of", shown, e))
}

impl RewriteLinks {
    fn each(&self, forward: bool) -> Res {
        for l in &self.links {
            let shown = self.dir.join(&l.path);
            let (dir, name) = open_parent(&self.dir, &l.path)?;
            let (from, to) = if forward {
                (&l.old, &l.new)
            } else {
                (&l.new, &l.old)
            };
            swap(&dir, &name, (from, to), l.dir_mtime, &shown)?;
        }
        Ok(())
    }
}

impl StepKind for RewriteLinks {
    type Record = R;

    fn summary(&self) -> String {
        format!(
            "rewrite {} relative link(s) in {} that point outside it, so that they still reach the same files",
            self.links.len(),
            show(&self.dir)
        )
    }

    fn apply(&self, r: &mut R, _: &Ctx, save: &mut Save<R>) -> Res {
        if !r.recorded {
            r.recorded = true;
            save(r)?;
        }
        self.each(true)
    }

    fn undo(&self, _: &mut R, _: &Ctx, _: &mut Save<R>) -> Res {
        self.each(false)
    }

    fn precheck_undo(&self, _: &R) -> Res {
        for l in &self.links {
            let p = self.dir.join(&l.path);
            match std::fs::read_link(&p) {
                Ok(t) if t == l.new || t == l.old => {}
                Ok(t) => {
                    return Err(StepError::new(format!(
                        "'{}' now points to '{}', not '{}' as the migration left it; undo will not replace it",
                        show(&p),
                        show(&t),
                        show(&l.new)
                    )))
                }
                // The whole tree is gone or moved: the move's own undo reports that.
                Err(_) => {}
            }
        }
        Ok(())
    }
}

/// The plan's detail lines: every rewritten link, old text and new.
pub fn rewrite_detail(links: &[LinkRewrite]) -> String {
    links
        .iter()
        .map(|l| format!("{}: {} => {}", show(&l.path), show(&l.old), show(&l.new)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where a relative link's text leaves the tree, if it does: the link sits in `parent`
/// (components below the tree's root, all real directories), and each component of `text` is
/// followed lexically while it stays in real directories of the tree (`is_dir`). A `..` from
/// the root leaves; what follows it (bytes as written) is then resolved from the root's parent.
/// A component that is a symlink inside the tree (or missing) ends the analysis: the kernel
/// would follow it, which no lexical reading can predict, so such a link is kept as it is.
pub(crate) fn leaves_tree<'t>(
    parent: &[Vec<u8>],
    text: &'t [u8],
    is_dir: &dyn Fn(&[Vec<u8>]) -> bool,
) -> Option<&'t [u8]> {
    if text.first() == Some(&b'/') || text.is_empty() {
        return None;
    }
    let mut stack: Vec<Vec<u8>> = parent.to_vec();
    let mut pos = 0;
    while pos < text.len() {
        let end = text[pos..]
            .iter()
            .position(|&c| c == b'/')
            .map_or(text.len(), |i| pos + i);
        let comp = &text[pos..end];
        let mut next = end;
        while next < text.len() && text[next] == b'/' {
            next += 1;
        }
        let last = next >= text.len();
        match comp {
            b"" | b"." => {}
            b".." if stack.is_empty() => return Some(&text[next..]),
            b".." => {
                stack.pop();
            }
            name => {
                stack.push(name.to_vec());
                if !last && !is_dir(&stack) {
                    return None;
                }
            }
        }
        pos = next;
    }
    None
}

/// Every relative symlink under `tree` (`~/.claude`, a real directory in `home`) whose target
/// leaves the tree, with the absolute text that reaches the same thing from anywhere: the
/// physical path of the tree's parent (the home, canonicalised) followed by the rest of the
/// text as written. Read-only, through directory descriptors.
pub fn leaving_links(home: &Path, tree: &Path) -> Result<Vec<LinkRewrite>, StepError> {
    use std::collections::{HashMap, HashSet};
    let base = std::fs::canonicalize(tree)
        .ok()
        .and_then(|t| t.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| home.to_path_buf());
    let root = Dir::open(tree, DIR_FLAGS, Mode::empty()).map_err(|e| nix_io("open", tree, e))?;
    let mut dirs: HashSet<Vec<Vec<u8>>> = HashSet::new();
    let mut mtimes: HashMap<Vec<Vec<u8>>, (i64, i64)> = HashMap::new();
    dirs.insert(Vec::new());
    let mut links: Vec<(Vec<Vec<u8>>, Vec<u8>)> = Vec::new();
    let mut todo: Vec<(Dir, Vec<Vec<u8>>)> = vec![(root, Vec::new())];
    while let Some((mut dir, at)) = todo.pop() {
        // SAFETY: `dir` stays open for as long as `fd` is used; iterating it (which needs
        // `&mut`) neither closes nor replaces its descriptor.
        let fd = unsafe { BorrowedFd::borrow_raw(dir.as_raw_fd()) };
        let st = fstat(fd).map_err(|e| nix_io("stat", tree, e))?;
        mtimes.insert(at.clone(), (st.st_mtime, st.st_mtime_nsec));
        let shown = || {
            let mut p = tree.to_path_buf();
            for c in &at {
                p.push(OsStr::from_bytes(c));
            }
            p
        };
        // The directory entry's type (d_type) where the filesystem gives it: no lstat per file.
        let mut names = Vec::new();
        for e in dir.iter() {
            let e = e.map_err(|e| nix_io("read the directory", &shown(), e))?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                let kind = match e.file_type() {
                    Some(nix::dir::Type::Directory) => Some(nix::libc::S_IFDIR),
                    Some(nix::dir::Type::Symlink) => Some(nix::libc::S_IFLNK),
                    Some(_) => Some(0),
                    None => None,
                };
                names.push((e.file_name().to_owned(), kind));
            }
        }
        for (n, kind) in names {
            let kind = match kind {
                Some(k) => k,
                None => {
                    fstatat(fd, n.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                        .map_err(|e| {
                            nix_io("lstat", &shown().join(OsStr::from_bytes(n.as_bytes())), e)
                        })?
                        .st_mode
                        & nix::libc::S_IFMT
                }
            };
            let mut rel = at.clone();
            rel.push(n.as_bytes().to_vec());
            match kind {
                nix::libc::S_IFDIR => {
                    let sub = Dir::openat(fd, n.as_c_str(), DIR_FLAGS, Mode::empty())
                        .map_err(|e| nix_io("open", &shown(), e))?;
                    dirs.insert(rel.clone());
                    todo.push((sub, rel));
                }
                nix::libc::S_IFLNK => {
                    let t = nix::fcntl::readlinkat(fd, n.as_c_str())
                        .map_err(|e| nix_io("read the link", &shown(), e))?;
                    links.push((rel, t.as_bytes().to_vec()));
                }
                _ => {}
            }
        }
    }
    let is_dir = |p: &[Vec<u8>]| dirs.contains(p);
    let mut out = Vec::new();
    for (rel, text) in links {
        let Some(rest) = leaves_tree(&rel[..rel.len() - 1], &text, &is_dir) else {
            continue;
        };
        let mut new = base.as_os_str().as_bytes().to_vec();
        if !rest.is_empty() {
            if new.last() != Some(&b'/') {
                new.push(b'/');
            }
            new.extend_from_slice(rest);
        }
        let dir_mtime = mtimes
            .get(&rel[..rel.len() - 1])
            .copied()
            .unwrap_or_default();
        out.push(LinkRewrite {
            dir_mtime,
            path: PathBuf::from(OsStr::from_bytes(&rel.join(&b'/'))),
            old: PathBuf::from(OsStr::from_bytes(&text)),
            new: PathBuf::from(OsStr::from_bytes(&new)),
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(p: &[&str]) -> Vec<Vec<u8>> {
        p.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn lexical_reading_of_where_a_link_leads() {
        let dirs = [v(&[]), v(&["a"]), v(&["a", "b"])];
        let is_dir = |p: &[Vec<u8>]| dirs.iter().any(|d| d == p);
        let at_root: &[Vec<u8>] = &[];
        let in_ab = v(&["a", "b"]);
        type Case<'a> = (&'a [Vec<u8>], &'a [u8], Option<&'a [u8]>);
        let cases: [Case; 11] = [
            (
                at_root,
                b"../dotfiles/CLAUDE.md",
                Some(b"dotfiles/CLAUDE.md"),
            ),
            (at_root, b"..", Some(b"")),
            (at_root, b"../", Some(b"")),
            (at_root, b"./../x/../y/", Some(b"x/../y/")),
            (at_root, b"a/../../z", Some(b"z")),
            (at_root, b"a/b/c", None),
            (at_root, b"/abs/olute", None),
            (&in_ab, b"../../../up", Some(b"up")),
            (&in_ab, b"../../x", None),
            // Through a name that is not a directory of the tree: not predictable, kept.
            (at_root, b"link/../../x", None),
            (at_root, b"a//..//..//x", Some(b"x")),
        ];
        for (parent, text, want) in cases {
            assert_eq!(
                leaves_tree(parent, text, &is_dir),
                want,
                "{:?} in {parent:?}",
                String::from_utf8_lossy(text)
            );
        }
    }
}
