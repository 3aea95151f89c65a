//! The library's error type and the exit codes of the contract (`docs/contract.md`).
//!
//! Every error that reaches the operator carries a stable `kind` (for `--json`), a message that
//! says what was found and why it matters, and, where one exists, the exact command that fixes it.

use std::fmt;

/// Exit codes, exactly as the contract's table gives them. Callers (`disinto init`, Ansible)
/// branch on these numbers: never renumber them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Ok = 0,
    Failed = 1,
    Usage = 2,
    Refused = 3,
    NotConfirmed = 4,
    Problems = 5,
    RollbackFailed = 6,
}

impl ExitCode {
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// What went wrong, for machines: `error.kind` in `--json`. Each kind belongs to one exit code
/// ([`ErrorKind::exit`]), as the contract's exit-code table lists them; the strings
/// ([`ErrorKind::as_str`]) are part of the contract: never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    // Exit 1: failed while applying; everything was rolled back.
    /// A step failed while applying; the run rolled back what it had done.
    ApplyFailed,
    /// The home or config dir could not be inspected (for a reason other than permission), the
    /// run lock could not be taken for a reason other than contention, or free space could not be
    /// read.
    Io,
    /// An existing journal could not be rewritten when the run began.
    Journal,

    // Exit 2: usage errors; nothing was changed.
    /// clap rejected the command line (unknown flag, missing value, ...).
    Usage,
    /// `--shared-dir`, `--config-dir`, or a value in the env file, is a relative path.
    RelativePath,
    /// The shared or config dir is inside `~/.claude` or contains the home, or they are the
    /// same directory.
    OverlappingPaths,
    /// The home does not exist or is not a directory.
    BadHome,
    /// `HOME` is not set and there is no `--home`.
    NoHome,
    /// Under sudo, `SUDO_USER` is not in the password database.
    UnknownSudoUser,
    /// `--agent-uid` (or `DISINTO_AGENT_UID`) is not a number.
    BadAgentUid,
    /// The shared or config dir is not valid UTF-8 and an env file is to be written.
    PathNotUtf8,
    /// A path to write into the env file has no quoting that every reader reads alike.
    EnvValueUnquotable,
    /// The home is `/` or a system directory (`/etc`, `/usr`, `/var`, ...), as given or where
    /// it resolves.
    SystemDirHome,
    /// Acting for another user (root for U): the shared or config dir is inside U's home.
    HomeContainsSharedDir,
    /// A path is longer than `PATH_MAX`, or a component longer than the filesystem's name limit.
    PathTooLong,

    // Exit 3: refused, the layout or the machine needs an operator; nothing was changed.
    /// Layout `conflict`: `~/.claude` and the config dir both hold files, or the config dir
    /// exists and is not a directory.
    Conflict,
    /// Layout `foreign-symlink`: `~/.claude` is a symlink resolving elsewhere.
    ForeignSymlink,
    /// Layout `not-a-directory`: `~/.claude` is a file, fifo, socket or device.
    NotADirectory,
    /// `~/.claude.json` and `<config>/.claude.json` both exist.
    ClaudeJsonConflict,
    /// `~/.claude.json` is a symlink resolving elsewhere than the shared copy.
    ClaudeJsonForeignSymlink,
    /// `~/.claude.json` is a directory or a special file.
    ClaudeJsonNotAFile,
    /// An agent is running: `session.lock` is locked, a refresh lock is fresh, or processes use
    /// `~/.claude`.
    AgentRunning,
    /// Not root and cannot write where the plan must; or permission denied while inspecting the
    /// home, locking, or creating the journal or its state directory.
    NoPermission,
    /// A cross-device copy (or an undo's copy back) would not fit: too few blocks or inodes.
    NoSpace,
    /// Another run holds the lock on the same home or shared dir.
    AlreadyRunning,
    /// The journal cannot be read or parsed.
    JournalUnreadable,
    /// The env file cannot be read or parsed.
    EnvFileUnreadable,
    /// The env file's directory does not exist (`FACTORY_ROOT` wrong, a typo in `--env-file`).
    EnvFileDirMissing,
    /// `undo`: the env or rc file was edited after the migration wrote it, a link was replaced,
    /// or a config dir the migration created empty now holds files.
    ChangedSince,
    /// `migrate` while an `undo` is interrupted.
    UndoInterrupted,
    /// `--wait`: an agent was still running when the limit passed.
    WaitTimeout,
    /// Across filesystems, containers still bind-mount `~/.claude`: they would keep the removed
    /// source.
    ContainerMount,
    /// What the plan read changed while the run waited for the agents.
    ChangedWhileWaiting,
    /// `~/.claude/session.lock` is not a regular file, so it cannot be a lock.
    SessionLockNotAFile,
    /// `migrate` (resuming) or `undo`: the journal was not written by a run like this one
    /// (owner, links, mode, or paths other than the ones the tool derives).
    JournalUntrusted,
    /// The rc file (`--profile`) cannot be read. Not yet in the contract's table.
    ProfileUnreadable,
    /// The env file or rc file is a fifo, device, socket or directory (refused before it is
    /// read).
    NotARegularFile,
    /// The env file or rc file is larger than 1 MiB (not read).
    FileTooLarge,
    /// The env file or rc file (through its symlinks) is not the home owner's.
    ForeignFile,
    /// A directory on the way to the config dir belongs to a user other than root and the
    /// home's owner.
    ForeignDir,
    /// A directory on the way to the config dir is group- or other-writable (a root-owned
    /// sticky directory such as `/tmp` is fine).
    OpenDir,
    /// The config dir already holds files and is not the home owner's.
    ConfigDirNotOwned,

    // Exit 4.
    /// No confirmation: no terminal and no `--yes`, or the operator said no.
    NotConfirmed,

    // Exit 6.
    /// A rollback, or an undo, itself failed: manual recovery needed.
    RollbackFailed,
}

impl ErrorKind {
    /// Every kind, in the order of the contract's exit-code table.
    pub const ALL: [ErrorKind; 44] = [
        ErrorKind::ApplyFailed,
        ErrorKind::Io,
        ErrorKind::Journal,
        ErrorKind::Usage,
        ErrorKind::RelativePath,
        ErrorKind::OverlappingPaths,
        ErrorKind::BadHome,
        ErrorKind::NoHome,
        ErrorKind::UnknownSudoUser,
        ErrorKind::BadAgentUid,
        ErrorKind::PathNotUtf8,
        ErrorKind::EnvValueUnquotable,
        ErrorKind::SystemDirHome,
        ErrorKind::HomeContainsSharedDir,
        ErrorKind::PathTooLong,
        ErrorKind::Conflict,
        ErrorKind::ForeignSymlink,
        ErrorKind::NotADirectory,
        ErrorKind::ClaudeJsonConflict,
        ErrorKind::ClaudeJsonForeignSymlink,
        ErrorKind::ClaudeJsonNotAFile,
        ErrorKind::AgentRunning,
        ErrorKind::NoPermission,
        ErrorKind::NoSpace,
        ErrorKind::AlreadyRunning,
        ErrorKind::JournalUnreadable,
        ErrorKind::EnvFileUnreadable,
        ErrorKind::EnvFileDirMissing,
        ErrorKind::ProfileUnreadable,
        ErrorKind::ChangedSince,
        ErrorKind::UndoInterrupted,
        ErrorKind::WaitTimeout,
        ErrorKind::ContainerMount,
        ErrorKind::ChangedWhileWaiting,
        ErrorKind::SessionLockNotAFile,
        ErrorKind::JournalUntrusted,
        ErrorKind::NotARegularFile,
        ErrorKind::FileTooLarge,
        ErrorKind::ForeignFile,
        ErrorKind::ForeignDir,
        ErrorKind::OpenDir,
        ErrorKind::ConfigDirNotOwned,
        ErrorKind::NotConfirmed,
        ErrorKind::RollbackFailed,
    ];

    /// The stable kebab-case name `--json` prints.
    pub fn as_str(self) -> &'static str {
        use ErrorKind::*;
        match self {
            ApplyFailed => "apply-failed",
            Io => "io",
            Journal => "journal",
            Usage => "usage",
            RelativePath => "relative-path",
            OverlappingPaths => "overlapping-paths",
            BadHome => "bad-home",
            NoHome => "no-home",
            UnknownSudoUser => "unknown-sudo-user",
            BadAgentUid => "bad-agent-uid",
            PathNotUtf8 => "path-not-utf8",
            EnvValueUnquotable => "env-value-unquotable",
            SystemDirHome => "system-dir-home",
            HomeContainsSharedDir => "home-contains-shared-dir",
            PathTooLong => "path-too-long",
            Conflict => "conflict",
            ForeignSymlink => "foreign-symlink",
            NotADirectory => "not-a-directory",
            ClaudeJsonConflict => "claude-json-conflict",
            ClaudeJsonForeignSymlink => "claude-json-foreign-symlink",
            ClaudeJsonNotAFile => "claude-json-not-a-file",
            AgentRunning => "agent-running",
            NoPermission => "no-permission",
            NoSpace => "no-space",
            AlreadyRunning => "already-running",
            JournalUnreadable => "journal-unreadable",
            EnvFileUnreadable => "env-file-unreadable",
            EnvFileDirMissing => "env-file-dir-missing",
            ProfileUnreadable => "profile-unreadable",
            ChangedSince => "changed-since",
            UndoInterrupted => "undo-interrupted",
            WaitTimeout => "wait-timeout",
            ContainerMount => "container-mount",
            ChangedWhileWaiting => "changed-while-waiting",
            SessionLockNotAFile => "session-lock-not-a-file",
            JournalUntrusted => "journal-untrusted",
            NotARegularFile => "not-a-regular-file",
            FileTooLarge => "file-too-large",
            ForeignFile => "foreign-file",
            ForeignDir => "foreign-dir",
            OpenDir => "open-dir",
            ConfigDirNotOwned => "config-dir-not-owned",
            NotConfirmed => "not-confirmed",
            RollbackFailed => "rollback-failed",
        }
    }

    /// The exit code an error of this kind ends the process with.
    pub fn exit(self) -> ExitCode {
        use ErrorKind::*;
        match self {
            ApplyFailed | Io | Journal => ExitCode::Failed,
            Usage
            | RelativePath
            | OverlappingPaths
            | BadHome
            | NoHome
            | UnknownSudoUser
            | BadAgentUid
            | PathNotUtf8
            | EnvValueUnquotable
            | SystemDirHome
            | HomeContainsSharedDir
            | PathTooLong => ExitCode::Usage,
            Conflict
            | ForeignSymlink
            | NotADirectory
            | ClaudeJsonConflict
            | ClaudeJsonForeignSymlink
            | ClaudeJsonNotAFile
            | AgentRunning
            | NoPermission
            | NoSpace
            | AlreadyRunning
            | JournalUnreadable
            | EnvFileUnreadable
            | EnvFileDirMissing
            | ProfileUnreadable
            | ChangedSince
            | UndoInterrupted
            | WaitTimeout
            | ContainerMount
            | ChangedWhileWaiting
            | SessionLockNotAFile
            | JournalUntrusted
            | NotARegularFile
            | FileTooLarge
            | ForeignFile
            | ForeignDir
            | OpenDir
            | ConfigDirNotOwned => ExitCode::Refused,
            NotConfirmed => ExitCode::NotConfirmed,
            RollbackFailed => ExitCode::RollbackFailed,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ErrorKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One error of the tool. `kind` is the stable name for machines (and decides the exit code);
/// `message` is for people.
#[derive(Debug, thiserror::Error)]
pub struct Error {
    pub exit: ExitCode,
    pub kind: ErrorKind,
    pub message: String,
    /// The exact command (or action) that fixes it, when there is one.
    pub fix: Option<String>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(fix) = &self.fix {
            write!(f, "\n  fix: {fix}")?;
        }
        Ok(())
    }
}

impl Error {
    /// An error of `kind`; its exit code is the kind's ([`ErrorKind::exit`]).
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            exit: kind.exit(),
            kind,
            message: message.into(),
            fix: None,
        }
    }
    pub fn with_fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Every kind's `--json` string and exit code, written out: a rename fails here first.
    /// The match is exhaustive, so a new kind cannot be added without a row.
    fn pinned(k: ErrorKind) -> (&'static str, i32) {
        use ErrorKind::*;
        match k {
            ApplyFailed => ("apply-failed", 1),
            Io => ("io", 1),
            Journal => ("journal", 1),
            Usage => ("usage", 2),
            RelativePath => ("relative-path", 2),
            OverlappingPaths => ("overlapping-paths", 2),
            BadHome => ("bad-home", 2),
            NoHome => ("no-home", 2),
            UnknownSudoUser => ("unknown-sudo-user", 2),
            BadAgentUid => ("bad-agent-uid", 2),
            PathNotUtf8 => ("path-not-utf8", 2),
            EnvValueUnquotable => ("env-value-unquotable", 2),
            SystemDirHome => ("system-dir-home", 2),
            HomeContainsSharedDir => ("home-contains-shared-dir", 2),
            PathTooLong => ("path-too-long", 2),
            Conflict => ("conflict", 3),
            ForeignSymlink => ("foreign-symlink", 3),
            NotADirectory => ("not-a-directory", 3),
            ClaudeJsonConflict => ("claude-json-conflict", 3),
            ClaudeJsonForeignSymlink => ("claude-json-foreign-symlink", 3),
            ClaudeJsonNotAFile => ("claude-json-not-a-file", 3),
            AgentRunning => ("agent-running", 3),
            NoPermission => ("no-permission", 3),
            NoSpace => ("no-space", 3),
            AlreadyRunning => ("already-running", 3),
            JournalUnreadable => ("journal-unreadable", 3),
            EnvFileUnreadable => ("env-file-unreadable", 3),
            EnvFileDirMissing => ("env-file-dir-missing", 3),
            ProfileUnreadable => ("profile-unreadable", 3),
            ChangedSince => ("changed-since", 3),
            UndoInterrupted => ("undo-interrupted", 3),
            WaitTimeout => ("wait-timeout", 3),
            ContainerMount => ("container-mount", 3),
            ChangedWhileWaiting => ("changed-while-waiting", 3),
            SessionLockNotAFile => ("session-lock-not-a-file", 3),
            JournalUntrusted => ("journal-untrusted", 3),
            NotARegularFile => ("not-a-regular-file", 3),
            FileTooLarge => ("file-too-large", 3),
            ForeignFile => ("foreign-file", 3),
            ForeignDir => ("foreign-dir", 3),
            OpenDir => ("open-dir", 3),
            ConfigDirNotOwned => ("config-dir-not-owned", 3),
            NotConfirmed => ("not-confirmed", 4),
            RollbackFailed => ("rollback-failed", 6),
        }
    }

    /// Kinds the code can return that `docs/contract.md`'s exit-code table does not list yet.
    const NOT_IN_CONTRACT: [ErrorKind; 0] = [];

    #[test]
    fn every_kind_serialises_to_its_pinned_string_and_exits_with_its_code() {
        let mut seen = std::collections::BTreeSet::new();
        for k in ErrorKind::ALL {
            let (name, code) = pinned(k);
            assert_eq!(k.as_str(), name);
            assert_eq!(k.to_string(), name);
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{name}\""));
            assert_eq!(k.exit().code(), code, "{name}");
            let e = Error::new(k, "m");
            assert_eq!((e.kind, e.exit), (k, k.exit()));
            assert!(seen.insert(name), "{name} twice in ALL");
        }
        assert_eq!(seen.len(), ErrorKind::ALL.len());
    }

    /// The contract's exit-code table (`docs/contract.md`) and the enum name the same kinds, each
    /// under the same exit code.
    #[test]
    fn the_contract_s_exit_code_table_names_exactly_the_kinds() {
        let contract =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/contract.md"))
                .unwrap();
        let mut documented: BTreeMap<String, i32> = BTreeMap::new();
        for line in contract.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            // | code | meaning | anything changed? | error kinds |
            let Some(code) = cells.get(1).and_then(|c| c.parse::<i32>().ok()) else {
                continue;
            };
            let Some(kinds) = cells.get(4) else { continue };
            for (i, part) in kinds.split('`').enumerate() {
                if i % 2 == 1 {
                    assert!(
                        documented.insert(part.to_string(), code).is_none(),
                        "`{part}` twice in the table"
                    );
                }
            }
        }
        assert!(documented.len() >= 40, "table not found: {documented:?}");
        let ours: BTreeMap<String, i32> = ErrorKind::ALL
            .iter()
            .map(|k| (k.as_str().to_string(), k.exit().code()))
            .collect();
        for (name, code) in &documented {
            assert_eq!(
                ours.get(name),
                Some(code),
                "contract's `{name}` (exit {code})"
            );
        }
        for k in ErrorKind::ALL {
            if !NOT_IN_CONTRACT.contains(&k) {
                assert_eq!(
                    documented.get(k.as_str()),
                    Some(&k.exit().code()),
                    "`{k}` missing from the contract's table"
                );
            }
        }
    }
}
