//! Who and where: resolve the options of the contract into concrete paths.
//!
//! Reads (never writes): the password database, the home's owner, and the env file's values for
//! the precedence rule "flag, then process environment, then the env file, then the default".

use crate::envfile;
use crate::error::{Error, ErrorKind, Result};
use crate::pathser::show;
use crate::profile::{self, ShellKind};
use nix::unistd::{Uid, User};
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

pub const DEFAULT_SHARED_DIR: &str = "/var/lib/disinto/claude-shared";
/// The uid Claude runs as inside the factory's containers (user `agent`).
pub const DEFAULT_AGENT_UID: u32 = 1000;

/// What the process environment contributes. Gathered once so resolution is testable.
#[derive(Debug, Clone, Default)]
pub struct ProcessEnv {
    pub home: Option<PathBuf>,
    pub sudo_user: Option<String>,
    pub factory_root: Option<PathBuf>,
    pub xdg_state_home: Option<PathBuf>,
    pub zdotdir: Option<PathBuf>,
    pub agent_uid: Option<String>,
    pub cwd: PathBuf,
    pub euid: u32,
}

impl ProcessEnv {
    pub fn from_process() -> Self {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        ProcessEnv {
            home: var("HOME").map(PathBuf::from),
            sudo_user: var("SUDO_USER").and_then(|s| s.into_string().ok()),
            factory_root: var("FACTORY_ROOT").map(PathBuf::from),
            xdg_state_home: var("XDG_STATE_HOME").map(PathBuf::from),
            zdotdir: var("ZDOTDIR").map(PathBuf::from),
            agent_uid: var("DISINTO_AGENT_UID").and_then(|s| s.into_string().ok()),
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
            euid: Uid::effective().as_raw(),
        }
    }
}

/// The owner of the home being migrated: everything the tool creates there belongs to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    pub name: Option<String>,
    pub shell: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub home: PathBuf,
    pub owner: Owner,
    pub shared_dir: PathBuf,
    pub config_dir: PathBuf,
    pub env_file: Option<PathBuf>,
    /// Why this env file (or none) was chosen, for the plan.
    pub env_file_note: String,
    pub profile: Option<PathBuf>,
    pub shell: ShellKind,
    /// `<state>/disinto/claude-init`, where the journal lives.
    pub state_dir: PathBuf,
    pub agent_uid: u32,
    /// The agents' uid was given (`--agent-uid`, `DISINTO_AGENT_UID`): `verify` then requires
    /// that uid to read and write the config dir and the credentials (a problem, not a warning).
    pub agent_uid_given: bool,
    pub euid: u32,
}

impl Settings {
    pub fn claude_dir(&self) -> PathBuf {
        self.home.join(".claude")
    }
    pub fn claude_json(&self) -> PathBuf {
        self.home.join(".claude.json")
    }
    pub fn config_claude_json(&self) -> PathBuf {
        self.config_dir.join(".claude.json")
    }
    /// Whether we act for someone else and must hand them what we create.
    pub fn chown_needed(&self) -> bool {
        self.euid == 0
    }
    pub fn owner_ids(&self) -> Option<(u32, u32)> {
        self.chown_needed()
            .then_some((self.owner.uid, self.owner.gid))
    }
}

/// The options that decide the settings (a subset of the CLI, so tests need no clap).
#[derive(Debug, Clone, Default)]
pub struct Requested {
    pub home: Option<PathBuf>,
    pub shared_dir: Option<PathBuf>,
    pub config_dir: Option<PathBuf>,
    pub env_file: Option<PathBuf>,
    pub no_env_file: bool,
    pub profile: Option<PathBuf>,
    pub no_modify_profile: bool,
    /// `--agent-uid` (else `DISINTO_AGENT_UID`).
    pub agent_uid: Option<String>,
}

impl From<&crate::cli::Opts> for Requested {
    fn from(o: &crate::cli::Opts) -> Self {
        Requested {
            home: o.home.clone(),
            shared_dir: o.shared_dir.clone(),
            config_dir: o.config_dir.clone(),
            env_file: o.env_file.clone(),
            no_env_file: o.no_env_file,
            profile: o.profile.clone(),
            no_modify_profile: o.no_modify_profile,
            agent_uid: o.agent_uid.clone(),
        }
    }
}

fn absolutize(p: &Path, cwd: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    };
    // Lexical normalisation only: `.` and `..` are resolved without following links, so the
    // path we write into the env file is the one the operator named.
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn require_absolute(what: &str, flag: &str, p: &Path) -> Result<PathBuf> {
    if !p.is_absolute() {
        return Err(Error::new(
            ErrorKind::RelativePath,
            format!(
                "{what} '{}' is relative. Claude's refresh lock is a sibling of the config dir, \
                 and every process, on the host and in containers, must name the same one, so \
                 the path has to be absolute.",
                show(p)
            ),
        )
        .with_fix(if flag == "--config-dir" {
            format!("pass an absolute path, e.g. {flag} {DEFAULT_SHARED_DIR}/config")
        } else {
            format!("pass an absolute path, e.g. {flag} {DEFAULT_SHARED_DIR}")
        }));
    }
    Ok(absolutize(p, Path::new("/")))
}

/// Resolve the home: `--home`, else under sudo the home of `$SUDO_USER` from the password
/// database (not `$HOME`, which sudo may keep as the caller's), else `$HOME`.
fn resolve_home(req: &Requested, env: &ProcessEnv) -> Result<PathBuf> {
    if let Some(h) = &req.home {
        return Ok(absolutize(h, &env.cwd));
    }
    if env.euid == 0 {
        if let Some(name) = env.sudo_user.as_deref().filter(|n| *n != "root") {
            return match User::from_name(name) {
                Ok(Some(u)) => Ok(u.dir),
                _ => Err(Error::new(
                    ErrorKind::UnknownSudoUser,
                    format!("SUDO_USER is '{name}', but there is no such user in the password database."),
                )
                .with_fix("pass the home explicitly: --home /home/USER")),
            };
        }
    }
    match &env.home {
        Some(h) => Ok(absolutize(h, &env.cwd)),
        None => Err(Error::new(
            ErrorKind::NoHome,
            "HOME is not set, so there is no ~/.claude to find.",
        )
        .with_fix("pass it explicitly: --home /home/USER")),
    }
}

pub fn resolve(req: &Requested, env: &ProcessEnv) -> Result<Settings> {
    let home = resolve_home(req, env)?;
    let meta = std::fs::metadata(&home).map_err(|e| {
        Error::new(
            ErrorKind::BadHome,
            if e.kind() == std::io::ErrorKind::NotFound {
                format!("The home '{}' does not exist.", show(&home))
            } else {
                format!("The home '{}' cannot be used: {e}.", show(&home))
            },
        )
        .with_fix("pass an existing home directory with --home DIR")
    })?;
    if !meta.is_dir() {
        return Err(Error::new(
            ErrorKind::BadHome,
            format!("The home '{}' is not a directory.", show(&home)),
        )
        .with_fix("pass an existing home directory with --home DIR"));
    }
    refuse_system_home(&home, &meta)?;
    let pw = User::from_uid(Uid::from_raw(meta.uid())).ok().flatten();
    let owner = Owner {
        uid: meta.uid(),
        gid: meta.gid(),
        name: pw.as_ref().map(|u| u.name.clone()),
        shell: pw.as_ref().map(|u| u.shell.clone()),
    };

    // The env file first: it may supply the directories.
    let (env_file, env_file_note) = if req.no_env_file {
        (None, "no env file (--no-env-file)".to_string())
    } else if let Some(f) = &req.env_file {
        (Some(absolutize(f, &env.cwd)), "from --env-file".to_string())
    } else if let Some(root) = &env.factory_root {
        (
            Some(absolutize(&root.join(".env"), &env.cwd)),
            "$FACTORY_ROOT/.env".to_string(),
        )
    } else {
        let local = env.cwd.join(".env");
        if local.is_file() {
            (Some(local), "./.env in the current directory".to_string())
        } else {
            (
                None,
                "no env file: FACTORY_ROOT is not set and there is no ./.env (pass --env-file FILE)"
                    .to_string(),
            )
        }
    };
    let file_values = match &env_file {
        Some(f) => match check_length("env file", "--env-file", f)
            .and_then(|()| check_file_authority("env file", "--env-file", f, meta.uid(), true))
            .and_then(|()| read_small_file("env file", "--env-file", f))?
        {
            Some(bytes) => envfile::read_values(&bytes).map_err(|e| {
                Error::new(
                    ErrorKind::EnvFileUnreadable,
                    format!("The env file '{}' cannot be parsed: {e}.", show(f)),
                )
                .with_fix(format!(
                    "fix the file, or pass --no-env-file to leave it alone: $EDITOR '{}'",
                    show(f)
                ))
            })?,
            None => Default::default(),
        },
        None => Default::default(),
    };

    // A value in the file that points into the old ~/.claude is the stale entry this migration
    // exists to replace, not a choice to honour.
    let claude = home.join(".claude");
    let usable = |v: &&String| !v.is_empty() && !Path::new(v.as_str()).starts_with(&claude);
    let shared_dir = match (
        &req.shared_dir,
        file_values.get("CLAUDE_SHARED_DIR").filter(usable),
    ) {
        (Some(p), _) => require_absolute("The shared dir", "--shared-dir", p)?,
        (None, Some(v)) => require_absolute(
            "CLAUDE_SHARED_DIR in the env file",
            "--shared-dir",
            Path::new(v),
        )?,
        _ => PathBuf::from(DEFAULT_SHARED_DIR),
    };
    let config_dir = match (
        &req.config_dir,
        file_values.get("CLAUDE_CONFIG_DIR").filter(usable),
    ) {
        (Some(p), _) => require_absolute("The config dir", "--config-dir", p)?,
        // A value in the env file only counts when the shared dir did not come from a flag or
        // the environment that contradicts it: `${CLAUDE_SHARED_DIR}/config` was resolved by
        // dotenvy against the file, so recompute it against the chosen shared dir.
        (None, Some(v)) if req.shared_dir.is_none() => require_absolute(
            "CLAUDE_CONFIG_DIR in the env file",
            "--config-dir",
            Path::new(v),
        )?,
        _ => shared_dir.join("config"),
    };

    for (what, p) in [("shared dir", &shared_dir), ("config dir", &config_dir)] {
        if p.starts_with(&claude) || home.starts_with(p) {
            return Err(Error::new(
                ErrorKind::OverlappingPaths,
                format!(
                    "The {what} '{}' overlaps the home's ~/.claude ('{}'): the migration would move a directory into itself.",
                    show(p),
                    show(&claude)
                ),
            )
            .with_fix(format!(
                "if CLAUDE_SHARED_DIR or CLAUDE_CONFIG_DIR is exported in this shell from the old setup, unset it (unset CLAUDE_SHARED_DIR CLAUDE_CONFIG_DIR); else pass the default: --shared-dir {DEFAULT_SHARED_DIR}"
            )));
        }
    }
    if config_dir == shared_dir {
        return Err(Error::new(
            ErrorKind::OverlappingPaths,
            "The config dir and the shared dir are the same directory; the config dir must be inside the shared dir so its `.lock` sibling is shared too.",
        )
        .with_fix("drop --config-dir to use <shared-dir>/config"));
    }

    let (profile, shell) = if req.no_modify_profile {
        (None, ShellKind::Posix)
    } else if let Some(p) = &req.profile {
        let p = absolutize(p, &env.cwd);
        let kind = if p.extension().is_some_and(|e| e == "fish") {
            ShellKind::Fish
        } else {
            ShellKind::Posix
        };
        (Some(p), kind)
    } else {
        let kind = owner
            .shell
            .as_deref()
            .map(ShellKind::from_login_shell)
            .unwrap_or(ShellKind::Posix);
        let own_env = env.euid == owner.uid && env.home.as_deref() == Some(home.as_path());
        let zdotdir = if own_env {
            env.zdotdir.as_deref()
        } else {
            None
        };
        (Some(profile::default_profile(kind, &home, zdotdir)), kind)
    };

    if let Some(p) = &profile {
        check_length("profile", "--profile", p)?;
        check_file_authority("profile", "--profile", p, owner.uid, false)?;
        read_small_file("profile", "--profile", p)?;
    }

    // $XDG_STATE_HOME is the home owner's only when we run as them, in their own environment.
    let own_env = env.euid == owner.uid && env.home.as_deref() == Some(home.as_path());
    let state_base = match &env.xdg_state_home {
        Some(x) if own_env && x.is_absolute() => x.clone(),
        _ => home.join(".local/state"),
    };
    let given = req.agent_uid.as_ref().or(env.agent_uid.as_ref());
    let agent_uid = match given {
        Some(s) => s.parse().map_err(|_| {
            Error::new(
                ErrorKind::BadAgentUid,
                format!(
                    "The agents' uid (--agent-uid or DISINTO_AGENT_UID) is '{s}', not a number."
                ),
            )
            .with_fix("--agent-uid 1000   (or: export DISINTO_AGENT_UID=1000)")
        })?,
        None => DEFAULT_AGENT_UID,
    };

    // A path no quoting writes so that bash, dotenvy and docker compose read it alike (issue 11).
    if env_file.is_some() {
        for (key, value) in [
            ("CLAUDE_SHARED_DIR", &shared_dir),
            ("CLAUDE_CONFIG_DIR", &config_dir),
        ] {
            if let Err(e @ envfile::EnvFileError::Unquotable { .. }) =
                envfile::check_entry(key, value.as_os_str())
            {
                return Err(Error::new(ErrorKind::EnvValueUnquotable, format!("{e}."))
                    .with_fix(format!("--shared-dir {DEFAULT_SHARED_DIR}")));
            }
        }
    }

    let state_dir = state_base.join("disinto").join("claude-init");
    for (what, flag, p) in [
        ("home", "--home", Some(&home)),
        ("shared dir", "--shared-dir", Some(&shared_dir)),
        ("config dir", "--config-dir", Some(&config_dir)),
        ("env file", "--env-file", env_file.as_ref()),
        ("profile", "--profile", profile.as_ref()),
        ("journal's state dir", "--home", Some(&state_dir)),
    ] {
        if let Some(p) = p {
            check_length(what, flag, p)?;
        }
    }

    Ok(Settings {
        home,
        owner,
        shared_dir,
        config_dir,
        env_file,
        env_file_note,
        profile,
        shell,
        state_dir,
        agent_uid,
        agent_uid_given: given.is_some(),
        euid: env.euid,
    })
}

/// The most the tool reads of an env file or an rc file. Both are a few KiB; anything this big
/// is not one (or is `/dev/zero` behind a link), and reading it whole would exhaust memory.
pub const MAX_EDITABLE_FILE: u64 = 1 << 20;

/// Read an env or rc file the tool may edit, refusing before reading anything what it must not
/// read: a fifo (the read would block forever), a device, a socket or a directory, and a file
/// larger than [`MAX_EDITABLE_FILE`]. A symlink is followed (dotfile managers link these
/// files); the type and size checked are those of the file actually opened (`fstat` on the
/// descriptor, opened non-blocking so a fifo cannot hang the open either). `None`: no such file.
pub fn read_small_file(what: &str, flag: &str, path: &Path) -> Result<Option<Vec<u8>>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let unreadable = |e: std::io::Error| {
        Error::new(
            if flag == "--env-file" {
                ErrorKind::EnvFileUnreadable
            } else {
                ErrorKind::ProfileUnreadable
            },
            format!("The {what} '{}' cannot be read: {e}.", show(path)),
        )
        .with_fix(format!("re-run with sudo, or pass {}", no_flag(flag)))
    };
    // Look before opening: opening some devices has effects of its own.
    match std::fs::metadata(path) {
        Ok(m) => refuse_unusual_file(what, flag, path, &m)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unreadable(e)),
    }
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unreadable(e)),
    };
    let meta = file.metadata().map_err(unreadable)?;
    refuse_unusual_file(what, flag, path, &meta)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_EDITABLE_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_EDITABLE_FILE {
        return Err(too_large(what, flag, path, bytes.len() as u64));
    }
    Ok(Some(bytes))
}

/// Whether a directory is root's alone: owned by root, and nobody else may add, rename or
/// remove entries in it (not group/other-writable, or sticky, where only an entry's owner may).
fn root_controlled_dir(m: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let mode = m.permissions().mode();
    m.uid() == 0 && (mode & 0o022 == 0 || mode & 0o1000 != 0)
}

/// Who decides what an env or rc file holds, through any symlinks (issue 10, guarantee 4): the
/// file the tool would edit (the end of the link chain; when it does not exist yet, its
/// directory) must belong to the home's owner, or, for the env file only, be root's and reached
/// only through links and directories root alone controls. Otherwise the home's owner could
/// make root rewrite (or copy the bytes of) a file they could not touch themselves. Exit 3.
pub fn check_file_authority(
    what: &str,
    flag: &str,
    path: &Path,
    owner_uid: u32,
    root_may_own: bool,
) -> Result<()> {
    let mut cur = path.to_path_buf();
    let mut root_chain = true;
    for _ in 0..40 {
        let (Some(parent), Some(name)) = (cur.parent(), cur.file_name()) else {
            return Ok(()); // `/`: nothing to edit; the read will say so
        };
        let Ok(dir) = std::fs::canonicalize(parent) else {
            return Ok(()); // a missing directory is refused later, with its own message
        };
        let Ok(dmeta) = std::fs::metadata(&dir) else {
            return Ok(());
        };
        let entry = dir.join(name);
        let (decider, uid) = match std::fs::symlink_metadata(&entry) {
            Ok(m) if m.file_type().is_symlink() => {
                root_chain &= m.uid() == 0 && root_controlled_dir(&dmeta);
                let Ok(t) = std::fs::read_link(&entry) else {
                    return Ok(());
                };
                cur = if t.is_absolute() { t } else { dir.join(t) };
                continue;
            }
            Ok(m) => {
                root_chain &= root_controlled_dir(&dmeta) || dmeta.uid() == m.uid();
                (entry, m.uid())
            }
            Err(_) => {
                root_chain &= root_controlled_dir(&dmeta);
                (dir, dmeta.uid())
            }
        };
        if uid == owner_uid || (root_may_own && uid == 0 && root_chain) {
            return Ok(());
        }
        let through = if decider.starts_with(path) || path == decider {
            String::new()
        } else {
            format!(" (through its symlink, '{}')", show(&decider))
        };
        let why = if uid == 0 && root_may_own {
            "root's, but reached through a link or a directory the home's owner controls, who \
             could point it at any file of root's"
                .to_string()
        } else {
            format!("owned by uid {uid}")
        };
        return Err(Error::new(
            ErrorKind::ForeignFile,
            format!(
                "The {what} '{}'{through} is {why}, not the home's owner's (uid {owner_uid}): \
                 editing it would change a file the home's owner cannot, and its previous bytes \
                 would go into the journal.",
                show(path)
            ),
        )
        .with_fix(format!(
            "point {flag} at a file of the home's owner (or make it theirs: sudo chown {owner_uid} '{}'), or pass {}",
            show(&decider),
            no_flag(flag)
        )));
    }
    Err(Error::new(
        ErrorKind::ForeignFile,
        format!("The {what} '{}' is a loop of symlinks.", show(path)),
    )
    .with_fix(format!(
        "point {flag} at a regular file, or pass {}",
        no_flag(flag)
    )))
}

fn no_flag(flag: &str) -> &'static str {
    if flag == "--env-file" {
        "--no-env-file"
    } else {
        "--no-modify-profile"
    }
}

fn too_large(what: &str, flag: &str, path: &Path, len: u64) -> Error {
    Error::new(
        ErrorKind::FileTooLarge,
        format!(
            "The {what} '{}' holds more than {} bytes ({len} or more): that is not a {what} \
             this tool should rewrite, and it will not read it into memory.",
            show(path),
            MAX_EDITABLE_FILE
        ),
    )
    .with_fix(format!(
        "point {flag} at the right file, or pass {}",
        no_flag(flag)
    ))
}

/// A fifo, device, socket or directory where a regular file belongs: refused (exit 3) before
/// anything reads or replaces it.
pub fn refuse_unusual_file(
    what: &str,
    flag: &str,
    path: &Path,
    meta: &std::fs::Metadata,
) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let ft = meta.file_type();
    let kind = if ft.is_file() {
        if meta.len() > MAX_EDITABLE_FILE {
            return Err(too_large(what, flag, path, meta.len()));
        }
        return Ok(());
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a fifo (named pipe): reading it would wait forever for a writer"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    Err(Error::new(
        ErrorKind::NotARegularFile,
        format!(
            "The {what} '{}' is {kind}. The tool edits only regular files (through a symlink \
             is fine), and replacing this one by a file would destroy what it is.",
            show(path)
        ),
    )
    .with_fix(format!(
        "point {flag} at the regular file, or pass {}",
        no_flag(flag)
    )))
}

/// For the commands that change things (`migrate`, `undo`): acting for someone else (root
/// for U), a shared or config dir inside U's home would have its parents in U's hands while
/// the tool creates and hands over the directories below them. Usage error (exit 2). A user's
/// own run (or root's for a root-owned home) crosses no such line and may keep the shared dir
/// where it likes; `status` and `verify` only read.
pub fn refuse_shared_dir_in_foreign_home(s: &Settings) -> Result<()> {
    if s.euid != s.owner.uid
        && (s.shared_dir.starts_with(&s.home) || s.config_dir.starts_with(&s.home))
    {
        let (what, p) = if s.shared_dir.starts_with(&s.home) {
            ("shared dir", &s.shared_dir)
        } else {
            ("config dir", &s.config_dir)
        };
        return Err(Error::new(
            ErrorKind::HomeContainsSharedDir,
            format!(
                "The {what} '{}' is inside the home '{}', which belongs to someone else (uid \
                 {}): its owner could move or replace the directories above it while the tool \
                 creates and hands over directories there as uid {}.",
                show(p),
                show(&s.home),
                s.owner.uid,
                s.euid
            ),
        )
        .with_fix(format!(
            "keep the shared dir outside every home, e.g. the default: --shared-dir {DEFAULT_SHARED_DIR}"
        )));
    }
    Ok(())
}

/// Existing directories on the way to the config dir, checked before any change (issue 10,
/// guarantee 5), for `migrate`: every existing directory from `/` down to the config dir (as
/// named, and where it resolves) must belong to root or to the home's owner and be writable by
/// no one else (a root-owned sticky directory such as `/tmp` is fine: only an entry's owner may
/// rename it there). Otherwise that other user could swap the config dir the tool hands over,
/// or be handed it. And an existing config dir that is not empty must already be the home's
/// owner's: one user is never given another's files (root's empty one may be adopted). Exit 3.
pub fn check_existing_dirs(s: &Settings) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let u = s.owner.uid;
    let mut chain: Vec<PathBuf> = s.config_dir.ancestors().map(Path::to_path_buf).collect();
    chain.reverse();
    if let Ok(real) = std::fs::canonicalize(crate::fsops::nearest_existing(&s.config_dir)) {
        chain.extend(real.ancestors().map(Path::to_path_buf));
    }
    for d in &chain {
        let Ok(m) = std::fs::symlink_metadata(d) else {
            continue;
        };
        if m.file_type().is_symlink() || !m.is_dir() {
            continue; // links are followed into `real`; a file in the way is the layout's refusal
        }
        let mode = m.permissions().mode();
        if m.uid() != 0 && m.uid() != u {
            return Err(Error::new(
                ErrorKind::ForeignDir,
                format!(
                    "'{}' belongs to uid {}, neither root nor the home's owner (uid {u}): that \
                     user could replace the config dir this migration hands over, or be handed \
                     another user's.",
                    show(d),
                    m.uid()
                ),
            )
            .with_fix(format!(
                "make it root's if it is meant to be shared (sudo chown root:root '{}'), or pass another --shared-dir",
                show(d)
            )));
        }
        let sticky_root = m.uid() == 0 && mode & 0o1000 != 0;
        if mode & 0o022 != 0 && !sticky_root {
            return Err(Error::new(
                ErrorKind::OpenDir,
                format!(
                    "'{}' is writable by {} (mode {:04o}): anyone who can write it could \
                     replace the config dir this migration hands over.",
                    show(d),
                    if mode & 0o002 != 0 {
                        "everyone"
                    } else {
                        "its group"
                    },
                    mode & 0o7777
                ),
            )
            .with_fix(format!("sudo chmod go-w '{}'", show(d))));
        }
    }
    if let Ok(m) = std::fs::metadata(&s.config_dir) {
        let empty = std::fs::read_dir(&s.config_dir)
            .map(|mut r| r.next().is_none())
            .unwrap_or(false);
        if m.is_dir() && m.uid() != u && !empty {
            return Err(Error::new(
                ErrorKind::ConfigDirNotOwned,
                format!(
                    "The config dir '{}' already holds files and belongs to uid {}, not to the \
                     home's owner (uid {u}): adopting it would hand them over.",
                    show(&s.config_dir),
                    m.uid()
                ),
            )
            .with_fix(format!(
                "if these files are the home owner's: sudo chown -R {u} '{}'; else pass another --config-dir",
                show(&s.config_dir)
            )));
        }
    }
    Ok(())
}

/// Directories that are never a home: the root, the system's own trees, and the parents of homes.
/// Everything beneath the first list is refused too (nobody's `~/.claude` lives in `/proc` or
/// `/usr/lib`); `/var`, `/srv`, `/opt` and `/home` are refused only themselves, since service
/// accounts keep real homes below them (`/var/lib/jenkins`). `/root` is root's own home and
/// stays allowed.
const SYSTEM_TREES: &[&str] = &[
    "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot", "/dev",
    "/proc", "/sys", "/run",
];
const SYSTEM_DIRS: &[&str] = &[
    "/",
    "/var",
    "/var/lib",
    "/var/cache",
    "/var/log",
    "/var/spool",
    "/var/tmp",
    "/var/mail",
    "/srv",
    "/opt",
    "/home",
    "/tmp",
    "/mnt",
    "/media",
];

fn is_system_dir(p: &Path) -> bool {
    SYSTEM_DIRS.iter().any(|d| p == Path::new(d)) || SYSTEM_TREES.iter().any(|d| p.starts_with(d))
}

/// `--home /`, `--home /etc` and the like: the tool would treat a system directory as someone's
/// home, hand what it creates there to its owner and edit its "dotfiles". Checked on the path
/// as given and on where it resolves (`/home/x -> /etc`).
fn refuse_system_home(home: &Path, meta: &std::fs::Metadata) -> Result<()> {
    let real = std::fs::canonicalize(home).unwrap_or_else(|_| home.to_path_buf());
    for p in [home, real.as_path()] {
        if is_system_dir(p) {
            let shown = if p == home {
                format!("'{}'", show(home))
            } else {
                format!("'{}' (which resolves to '{}')", show(home), show(p))
            };
            return Err(Error::new(
                ErrorKind::SystemDirHome,
                format!(
                    "The home {shown} is a system directory (owned by uid {}), not a user's home: \
                     the migration would treat its files as someone's dotfiles and hand what it \
                     creates there to that owner.",
                    meta.uid()
                ),
            )
            .with_fix("pass the user's own home: --home /home/USER (or run as that user)"));
        }
    }
    Ok(())
}

/// Room left for the names the tool derives from a path: `<config>.dci-incoming`,
/// `.<name>.dci-tmp-<pid>`, `.<name>.symlink-<pid>-<n>`, `.<state>.dci-state-<pid>`.
const DERIVED_NAME_ROOM: usize = 40;

/// A path the filesystem cannot hold (longer than `PATH_MAX`, or a component longer than the
/// filesystem's name limit, counting the suffixes the tool adds) is a usage error up front,
/// not a failure half way through the run.
fn check_length(what: &str, flag: &str, p: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let too_long = |why: String| {
        Error::new(
            ErrorKind::PathTooLong,
            format!(
                "The {what} '{}' is too long: {why}, so the migration could not create the \
                 names it needs next to it.",
                show(p)
            ),
        )
        .with_fix(format!("choose a shorter path: {flag} DIR"))
    };
    let path_max = nix::libc::PATH_MAX as usize;
    if p.as_os_str().len() + DERIVED_NAME_ROOM >= path_max {
        return Err(too_long(format!(
            "{} bytes, and paths on this system must stay below {path_max} (with room for \
             the {DERIVED_NAME_ROOM} bytes the tool appends)",
            p.as_os_str().len()
        )));
    }
    let name_max = nix::sys::statvfs::statvfs(&crate::fsops::nearest_existing(p))
        .map(|v| v.name_max() as usize)
        .unwrap_or(255);
    let last = p.file_name();
    if let Some(c) = p.components().map(|c| c.as_os_str()).find(|c| {
        let room = if Some(*c) == last {
            DERIVED_NAME_ROOM
        } else {
            0
        };
        c.len() + room > name_max
    }) {
        let room = if Some(c) == last {
            format!(
                " (less the {DERIVED_NAME_ROOM} bytes the tool appends to the last name for its \
                 temporary and staging names)"
            )
        } else {
            String::new()
        };
        return Err(too_long(format!(
            "its component '{}' has {} bytes, and names on that filesystem hold at most \
             {name_max}{room}",
            show(Path::new(c)),
            c.as_bytes().len()
        )));
    }
    Ok(())
}

/// `OsString` helper for the env entries.
pub fn env_entries(s: &Settings) -> [(&'static str, OsString); 2] {
    [
        ("CLAUDE_SHARED_DIR", s.shared_dir.clone().into_os_string()),
        ("CLAUDE_CONFIG_DIR", s.config_dir.clone().into_os_string()),
    ]
}

#[cfg(test)]
mod tests;
