//! Who and where: resolve the options of the contract into concrete paths.
//!
//! Reads (never writes): the password database, the home's owner, and the env file's values for
//! the precedence rule "flag, then process environment, then the env file, then the default".

use crate::envfile;
use crate::error::{Error, Result};
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
        return Err(Error::usage(
            "relative-path",
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
                _ => Err(Error::usage(
                    "unknown-sudo-user",
                    format!("SUDO_USER is '{name}', but there is no such user in the password database."),
                )
                .with_fix("pass the home explicitly: --home /home/USER")),
            };
        }
    }
    match &env.home {
        Some(h) => Ok(absolutize(h, &env.cwd)),
        None => Err(Error::usage(
            "no-home",
            "HOME is not set, so there is no ~/.claude to find.",
        )
        .with_fix("pass it explicitly: --home /home/USER")),
    }
}

pub fn resolve(req: &Requested, env: &ProcessEnv) -> Result<Settings> {
    let home = resolve_home(req, env)?;
    let meta = std::fs::metadata(&home).map_err(|e| {
        Error::usage(
            "bad-home",
            if e.kind() == std::io::ErrorKind::NotFound {
                format!("The home '{}' does not exist.", show(&home))
            } else {
                format!("The home '{}' cannot be used: {e}.", show(&home))
            },
        )
        .with_fix("pass an existing home directory with --home DIR")
    })?;
    if !meta.is_dir() {
        return Err(Error::usage(
            "bad-home",
            format!("The home '{}' is not a directory.", show(&home)),
        )
        .with_fix("pass an existing home directory with --home DIR"));
    }
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
        Some(f) => match std::fs::read(f) {
            Ok(bytes) => envfile::read_values(&bytes).map_err(|e| {
                Error::refused(
                    "env-file-unreadable",
                    format!("The env file '{}' cannot be parsed: {e}.", show(f)),
                )
                .with_fix(format!(
                    "fix the file, or pass --no-env-file to leave it alone: $EDITOR '{}'",
                    show(f)
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
            Err(e) => {
                return Err(Error::refused(
                    "env-file-unreadable",
                    format!("The env file '{}' cannot be read: {e}.", show(f)),
                )
                .with_fix("re-run with sudo, or pass --no-env-file"))
            }
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
            return Err(Error::usage(
                "overlapping-paths",
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
        return Err(Error::usage(
            "overlapping-paths",
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

    // $XDG_STATE_HOME is the home owner's only when we run as them, in their own environment.
    let own_env = env.euid == owner.uid && env.home.as_deref() == Some(home.as_path());
    let state_base = match &env.xdg_state_home {
        Some(x) if own_env && x.is_absolute() => x.clone(),
        _ => home.join(".local/state"),
    };
    let given = req.agent_uid.as_ref().or(env.agent_uid.as_ref());
    let agent_uid = match given {
        Some(s) => s.parse().map_err(|_| {
            Error::usage(
                "bad-agent-uid",
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
                return Err(Error::usage("env-value-unquotable", format!("{e}."))
                    .with_fix(format!("--shared-dir {DEFAULT_SHARED_DIR}")));
            }
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
        state_dir: state_base.join("disinto").join("claude-init"),
        agent_uid,
        agent_uid_given: given.is_some(),
        euid: env.euid,
    })
}

/// `OsString` helper for the env entries.
pub fn env_entries(s: &Settings) -> [(&'static str, OsString); 2] {
    [
        ("CLAUDE_SHARED_DIR", s.shared_dir.clone().into_os_string()),
        ("CLAUDE_CONFIG_DIR", s.config_dir.clone().into_os_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_for(home: &Path) -> ProcessEnv {
        ProcessEnv {
            home: Some(home.into()),
            cwd: home.into(),
            euid: 4242,
            ..Default::default()
        }
    }

    #[test]
    fn precedence_flag_then_file_then_default() {
        let t = tempfile::tempdir().unwrap();
        let envf = t.path().join(".env");
        std::fs::write(
            &envf,
            "CLAUDE_SHARED_DIR=/srv/shared\nCLAUDE_CONFIG_DIR=${CLAUDE_SHARED_DIR}/cfg\n",
        )
        .unwrap();
        let mut req = Requested {
            env_file: Some(envf.clone()),
            ..Default::default()
        };
        let s = resolve(&req, &env_for(t.path())).unwrap();
        assert_eq!(s.shared_dir, Path::new("/srv/shared"));
        assert_eq!(s.config_dir, Path::new("/srv/shared/cfg"));
        req.shared_dir = Some("/flag/shared".into());
        let s = resolve(&req, &env_for(t.path())).unwrap();
        assert_eq!(s.shared_dir, Path::new("/flag/shared"));
        assert_eq!(s.config_dir, Path::new("/flag/shared/config"));
        req.no_env_file = true;
        req.env_file = None;
        req.shared_dir = None;
        let s = resolve(&req, &env_for(t.path())).unwrap();
        assert_eq!(s.shared_dir, Path::new(DEFAULT_SHARED_DIR));
        assert_eq!(s.env_file, None);
    }

    #[test]
    fn relative_and_overlapping_paths_are_usage_errors() {
        let t = tempfile::tempdir().unwrap();
        let req = Requested {
            shared_dir: Some("rel/dir".into()),
            no_env_file: true,
            ..Default::default()
        };
        assert_eq!(
            resolve(&req, &env_for(t.path())).unwrap_err().exit,
            crate::error::ExitCode::Usage
        );
        let req = Requested {
            shared_dir: Some(t.path().join(".claude/x")),
            no_env_file: true,
            ..Default::default()
        };
        assert_eq!(
            resolve(&req, &env_for(t.path())).unwrap_err().kind,
            "overlapping-paths"
        );
    }

    #[test]
    fn state_dir_ignores_xdg_of_another_user() {
        let t = tempfile::tempdir().unwrap();
        let mut env = env_for(t.path());
        env.xdg_state_home = Some("/elsewhere/state".into());
        let req = Requested {
            no_env_file: true,
            ..Default::default()
        };
        // euid 4242 is not the owner of the temp home: XDG_STATE_HOME is not theirs.
        let s = resolve(&req, &env).unwrap();
        assert_eq!(
            s.state_dir,
            t.path().join(".local/state/disinto/claude-init")
        );
        env.euid = s.owner.uid;
        let s = resolve(&req, &env).unwrap();
        assert_eq!(
            s.state_dir,
            Path::new("/elsewhere/state/disinto/claude-init")
        );
    }
}
