//! Detection: what is on disk now, and which layout of the contract that is.
//!
//! `Facts::gather` only reads (lstat, readlink, read_dir, and a metadata walk for counts);
//! `detect` is a pure function of the facts, so every layout is testable without a disk.
//! `~/.claude` is looked at with `lstat`: a symlink is never followed by accident.

use crate::error::ErrorKind;
use crate::fsops::{self, TreeStats};
use crate::pathser::show;
use crate::settings::Settings;
use serde::Serialize;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The layouts of the contract (`layout` in `--json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    Fresh,
    Legacy,
    Migrated,
    Adopt,
    Conflict,
    ForeignSymlink,
    DanglingSymlink,
    NotADirectory,
    Interrupted,
}

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::Fresh => "fresh",
            Layout::Legacy => "legacy",
            Layout::Migrated => "migrated",
            Layout::Adopt => "adopt",
            Layout::Conflict => "conflict",
            Layout::ForeignSymlink => "foreign-symlink",
            Layout::DanglingSymlink => "dangling-symlink",
            Layout::NotADirectory => "not-a-directory",
            Layout::Interrupted => "interrupted",
        }
    }
}

/// What one path is, seen with lstat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Absent,
    /// A real directory; `empty` says whether it has no entries at all.
    Dir {
        empty: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    File {
        size: u64,
    },
    /// A symlink with its target as written, and where it leads if it leads anywhere.
    Symlink {
        target: PathBuf,
        resolves_to: Option<PathBuf>,
    },
    Other,
}

impl Node {
    pub fn read(path: &Path) -> std::io::Result<Node> {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Node::Absent),
            // A parent that is not a directory (e.g. `<config>/.claude.json` when the config
            // dir is a regular file): the path cannot exist.
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOTDIR) => return Ok(Node::Absent),
            Err(e) => return Err(e),
        };
        let ft = meta.file_type();
        Ok(if ft.is_dir() {
            let empty = std::fs::read_dir(path)?.next().is_none();
            Node::Dir {
                empty,
                mode: meta.permissions().mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
            }
        } else if ft.is_symlink() {
            let target = std::fs::read_link(path)?;
            let resolves_to = std::fs::canonicalize(path).ok();
            Node::Symlink {
                target,
                resolves_to,
            }
        } else if ft.is_file() {
            Node::File { size: meta.len() }
        } else {
            Node::Other
        })
    }

    /// Absent, or a directory with nothing in it.
    pub fn is_vacant(&self) -> bool {
        matches!(self, Node::Absent | Node::Dir { empty: true, .. })
    }
    pub fn describe(&self) -> String {
        match self {
            Node::Absent => "absent".into(),
            Node::Dir { empty: true, .. } => "an empty directory".into(),
            Node::Dir { .. } => "a directory".into(),
            Node::File { size } => format!("a regular file ({size} bytes)"),
            Node::Symlink {
                target,
                resolves_to: Some(r),
            } if target == r => format!("a symlink to '{}'", show(target)),
            Node::Symlink {
                target,
                resolves_to: Some(r),
            } => {
                format!(
                    "a symlink to '{}' (resolving to '{}')",
                    show(target),
                    show(r)
                )
            }
            Node::Symlink {
                target,
                resolves_to: None,
            } => format!("a dangling symlink to '{}'", show(target)),
            Node::Other => "a special file (fifo, socket or device)".into(),
        }
    }
}

/// Everything detection and planning need to know, read from disk once.
#[derive(Debug, Clone)]
pub struct Facts {
    pub claude: Node,
    pub claude_json: Node,
    pub config: Node,
    /// `<config>/.claude.json`, and `~/.claude/.claude.json` (which becomes it after the move).
    pub config_claude_json: Node,
    pub inner_claude_json: Node,
    /// The config dir's canonical path, when it exists.
    pub config_canonical: Option<PathBuf>,
    /// Files/bytes under `~/.claude` (when it is a real directory).
    pub claude_stats: TreeStats,
    /// Whether `~/.claude` and the config dir's location share a filesystem (rename works).
    pub same_fs: bool,
    pub claude_json_same_fs: bool,
    /// Missing directories from the shared dir down to the config dir's parent, outermost first.
    pub missing_dirs: Vec<PathBuf>,
    pub env_file: Option<FileFacts>,
    pub profile: Option<FileFacts>,
    /// `.credentials.json` where the config will be read from (`~/.claude`'s for `legacy`, else
    /// the config dir's), when it is a regular file: its mode and owner.
    pub credentials: Option<(u32, u32, u32)>,
    /// Relative symlinks in `~/.claude` (a real directory) whose target leaves the tree, with
    /// the text that resolves to the same thing from the config dir (`step::rewrite_links`).
    pub leaving_links: Vec<crate::step::LinkRewrite>,
}

/// A file the tool may rewrite: its bytes now (None when absent).
#[derive(Debug, Clone)]
pub struct FileFacts {
    pub path: PathBuf,
    pub bytes: Option<Vec<u8>>,
}

impl FileFacts {
    fn read(path: &Path) -> std::io::Result<FileFacts> {
        // Bounded, and never a fifo or device (issue 10): a file the home's owner can swap.
        Ok(FileFacts {
            path: path.into(),
            bytes: crate::safefs::read_small(path, crate::settings::MAX_EDITABLE_FILE)?,
        })
    }
}

impl Facts {
    /// Read the world. Read-only: safe for `status` and `--dry-run`.
    pub fn gather(s: &Settings) -> std::io::Result<Facts> {
        let claude = Node::read(&s.claude_dir())?;
        let config = Node::read(&s.config_dir)?;
        // One metadata walk, on the rename path too (decided in issue 5, docs/BENCHMARKS.md):
        // a cross-device copy needs the byte count for its space check, and on one filesystem
        // the plan's "N files, M MiB" is what `--dry-run` users read before a move. The walk is
        // parallel, reads only directories and each regular file's lstat, and costs about as
        // much as `du -s` (tens of milliseconds for 50,000 files warm); the rename itself stays
        // O(1), so `migrate` never copies or re-reads on one filesystem.
        let claude_stats = match &claude {
            Node::Dir { empty: false, .. } => {
                fsops::tree_stats(&s.claude_dir()).map_err(std::io::Error::other)?
            }
            _ => TreeStats::default(),
        };
        let missing_dirs = s
            .config_dir
            .parent()
            .map(fsops::missing_dirs)
            .unwrap_or_default();
        let same =
            |a: &Path| fsops::same_filesystem(a, &s.config_dir).map_err(std::io::Error::other);
        let same_fs = if matches!(claude, Node::Dir { .. }) {
            same(&s.claude_dir())?
        } else {
            true
        };
        let claude_json = Node::read(&s.claude_json())?;
        let claude_json_same_fs = if matches!(claude_json, Node::File { .. }) {
            same(&s.claude_json())?
        } else {
            true
        };
        let cred_dir = if matches!(claude, Node::Dir { empty: false, .. }) {
            s.claude_dir()
        } else {
            s.config_dir.clone()
        };
        let credentials = std::fs::symlink_metadata(cred_dir.join(".credentials.json"))
            .ok()
            .filter(|m| m.file_type().is_file())
            .map(|m| (m.permissions().mode() & 0o7777, m.uid(), m.gid()));
        let leaving_links = match &claude {
            Node::Dir { empty: false, .. } => crate::step::leaving_links(&s.home, &s.claude_dir())
                .map_err(std::io::Error::other)?,
            _ => Vec::new(),
        };
        Ok(Facts {
            credentials,
            leaving_links,
            config_canonical: std::fs::canonicalize(&s.config_dir).ok(),
            config_claude_json: Node::read(&s.config_claude_json())?,
            inner_claude_json: if matches!(claude, Node::Dir { .. }) {
                Node::read(&s.claude_dir().join(".claude.json"))?
            } else {
                Node::Absent
            },
            claude,
            claude_json,
            config,
            claude_stats,
            same_fs,
            claude_json_same_fs,
            missing_dirs,
            env_file: s.env_file.as_deref().map(FileFacts::read).transpose()?,
            profile: s.profile.as_deref().map(FileFacts::read).transpose()?,
        })
    }
}

/// Why a layout needs an operator. `kind` is the `error.kind` of `--json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: ErrorKind,
    pub message: String,
    pub fix: String,
}

/// The layout of `~/.claude` against the config dir. Pure.
pub fn detect(f: &Facts) -> Layout {
    let config_vacant = f.config.is_vacant();
    match &f.claude {
        Node::Symlink {
            resolves_to: Some(r),
            ..
        } if Some(r) == f.config_canonical.as_ref() => Layout::Migrated,
        Node::Symlink {
            resolves_to: None, ..
        } => Layout::DanglingSymlink,
        Node::Symlink { .. } => Layout::ForeignSymlink,
        Node::File { .. } | Node::Other => Layout::NotADirectory,
        _ if !matches!(f.config, Node::Absent | Node::Dir { .. }) => Layout::Conflict,
        Node::Absent | Node::Dir { empty: true, .. } if config_vacant => Layout::Fresh,
        Node::Absent | Node::Dir { empty: true, .. } => Layout::Adopt,
        Node::Dir { .. } if config_vacant => Layout::Legacy,
        Node::Dir { .. } => Layout::Conflict,
    }
}

/// The refusal, if this layout (or `~/.claude.json`) needs an operator. Pure.
pub fn refusal(layout: Layout, f: &Facts, s: &Settings) -> Option<Refusal> {
    let claude = show(&s.claude_dir());
    let config = show(&s.config_dir);
    let r = |kind, message: String, fix: String| Some(Refusal { kind, message, fix });
    match layout {
        Layout::Conflict if !matches!(f.config, Node::Absent | Node::Dir { .. }) => {
            return r(
                ErrorKind::Conflict,
                format!(
                    "The config dir '{config}' exists but is {}, not a directory. Claude Code needs a real directory there.",
                    f.config.describe()
                ),
                format!("move it aside and re-run: mv '{config}' '{config}.bak' && disinto-claude-init --yes"),
            )
        }
        Layout::Conflict => {
            return r(
                ErrorKind::Conflict,
                format!(
                    "Both '{claude}' and the config dir '{config}' hold files. Merging two Claude configs could overwrite the newer OAuth credentials, so this needs a person to choose."
                ),
                format!(
                    "keep the shared one and set the old one aside: mv '{claude}' '{claude}.old' && disinto-claude-init --yes   (or keep yours: mv '{config}' '{config}.old')"
                ),
            )
        }
        Layout::ForeignSymlink => {
            return r(
                ErrorKind::ForeignSymlink,
                format!(
                    "'{claude}' is {}, not the config dir '{config}'. Migrating through it would leave Claude's state split between two places, so this needs a person to choose.",
                    f.claude.describe()
                ),
                match &f.claude {
                    Node::Symlink { resolves_to: Some(real), .. } => format!(
                        "if that directory is the config you want, put it in place of the link and re-run: rm '{claude}' && mv '{}' '{claude}' && disinto-claude-init --yes",
                        show(real)
                    ),
                    _ => format!("remove the link and re-run: rm '{claude}' && disinto-claude-init --yes"),
                },
            )
        }
        Layout::NotADirectory => {
            return r(
                ErrorKind::NotADirectory,
                format!("'{claude}' is {}, where Claude Code keeps a directory.", f.claude.describe()),
                format!("look at it and move it aside, then re-run: mv '{claude}' '{claude}.bak' && disinto-claude-init --yes"),
            )
        }
        _ => {}
    }
    match claude_json_action(layout, f, s) {
        ClaudeJsonAction::Refuse(r) => Some(r),
        _ => None,
    }
}

/// What happens to `~/.claude.json` (`docs/contract.md`: it lives outside the directory, and a migration
/// that leaves it behind makes Claude start as if never set up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaudeJsonAction {
    /// Already our link, to a file that is there.
    Nothing,
    /// A real file: move it to `<config>/.claude.json` and link back.
    Move,
    /// No file to move: `~/.claude.json` is absent, a dangling link elsewhere (replaced; undo
    /// restores it), Docker's empty directory (`remove_empty_dir`, journaled), or already our
    /// link (`link` false). `create`: `<config>/.claude.json` does not exist yet and is created
    /// as `{}` (0600, the owner's), so Claude (and Docker's bind mount) find a file.
    Link {
        create: bool,
        remove_empty_dir: bool,
        link: bool,
    },
    Refuse(Refusal),
}

pub fn claude_json_action(layout: Layout, f: &Facts, s: &Settings) -> ClaudeJsonAction {
    let cj = show(&s.claude_json());
    let dest = s.config_claude_json();
    let target = show(&dest);
    // After a legacy move, `~/.claude/.claude.json` is what will sit at the destination.
    let dest_taken = match layout {
        Layout::Legacy => !matches!(f.inner_claude_json, Node::Absent),
        _ => !matches!(f.config_claude_json, Node::Absent),
    };
    let link = |remove_empty_dir: bool| ClaudeJsonAction::Link {
        create: !dest_taken,
        remove_empty_dir,
        link: true,
    };
    match &f.claude_json {
        Node::Absent => link(false),
        // What Docker leaves: compose's short-syntax bind mount of a missing
        // `~/.claude.json` creates an empty directory (root's) in its place.
        Node::Dir { empty: true, .. } => link(true),
        Node::File { .. } if dest_taken => ClaudeJsonAction::Refuse(Refusal {
            kind: ErrorKind::ClaudeJsonConflict,
            message: format!(
                "Both '{cj}' and '{target}' exist. They hold Claude's account and MCP state; choosing one would discard the other."
            ),
            fix: format!("keep one, set the other aside, and re-run: mv '{cj}' '{cj}.old' && disinto-claude-init --yes"),
        }),
        Node::File { .. } => ClaudeJsonAction::Move,
        Node::Symlink { target: t, resolves_to } => {
            let written = if t.is_absolute() { t.clone() } else { s.home.join(t) };
            let ours = written == dest
                || (resolves_to.is_some()
                    && f.config_canonical.as_ref().map(|c| c.join(".claude.json")) == *resolves_to);
            if ours && dest_taken {
                ClaudeJsonAction::Nothing
            } else if ours {
                ClaudeJsonAction::Link { create: true, remove_empty_dir: false, link: false }
            } else if resolves_to.is_none() {
                link(false)
            } else {
                ClaudeJsonAction::Refuse(Refusal {
                    kind: ErrorKind::ClaudeJsonForeignSymlink,
                    message: format!(
                        "'{cj}' is {}, not '{target}'. Containers only see the shared dir, so they would not find it.",
                        f.claude_json.describe()
                    ),
                    fix: format!(
                        "put the file itself in place of the link and re-run: cp -p --remove-destination \"$(readlink -f '{cj}')\" '{cj}' && disinto-claude-init --yes"
                    ),
                })
            }
        }
        Node::Dir { .. } | Node::Other => ClaudeJsonAction::Refuse(Refusal {
            kind: ErrorKind::ClaudeJsonNotAFile,
            message: format!(
                "'{cj}' is {}, where Claude Code keeps a JSON file{}.",
                f.claude_json.describe(),
                if matches!(f.claude_json, Node::Dir { .. }) {
                    " (an empty one, as Docker leaves, would be replaced; this one holds files)"
                } else {
                    ""
                }
            ),
            fix: format!("move it aside and re-run: mv '{cj}' '{cj}.bak' && disinto-claude-init --yes"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(claude: Node, config: Node) -> Facts {
        Facts {
            config_canonical: match &config {
                Node::Absent => None,
                _ => Some("/s/config".into()),
            },
            claude,
            config,
            claude_json: Node::Absent,
            config_claude_json: Node::Absent,
            inner_claude_json: Node::Absent,
            claude_stats: TreeStats::default(),
            same_fs: true,
            claude_json_same_fs: true,
            missing_dirs: vec![],
            env_file: None,
            profile: None,
            credentials: None,
            leaving_links: vec![],
        }
    }
    fn dir(empty: bool) -> Node {
        Node::Dir {
            empty,
            mode: 0o755,
            uid: 0,
            gid: 0,
        }
    }
    fn link(to: Option<&str>) -> Node {
        Node::Symlink {
            target: "x".into(),
            resolves_to: to.map(PathBuf::from),
        }
    }

    #[test]
    fn every_layout_from_facts_alone() {
        use Layout::*;
        let cases = [
            (Node::Absent, Node::Absent, Fresh),
            (dir(true), Node::Absent, Fresh),
            (dir(true), dir(true), Fresh),
            (dir(false), Node::Absent, Legacy),
            (dir(false), dir(true), Legacy),
            (link(Some("/s/config")), dir(false), Migrated),
            (Node::Absent, dir(false), Adopt),
            (dir(true), dir(false), Adopt),
            (dir(false), dir(false), Conflict),
            (dir(false), Node::File { size: 1 }, Conflict),
            (link(Some("/elsewhere")), dir(false), ForeignSymlink),
            (link(Some("/elsewhere")), Node::Absent, ForeignSymlink),
            (link(None), Node::Absent, DanglingSymlink),
            (Node::File { size: 3 }, Node::Absent, NotADirectory),
            (Node::Other, Node::Absent, NotADirectory),
        ];
        for (claude, config, want) in cases {
            let f = facts(claude.clone(), config.clone());
            assert_eq!(detect(&f), want, "claude={claude:?} config={config:?}");
        }
    }
}
