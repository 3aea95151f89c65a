//! Whether a journal may be acted on (issue 10, finding 1; docs/security.md guarantee 3).
//!
//! A resumed `migrate` and `undo` act on the paths the journal names, not on the command line:
//! that is what makes them finish or reverse exactly what was started. So the journal is an
//! instruction to root, and it must be one root wrote for this home:
//!
//! - [`check_file`]: who wrote it. A run as root acts only on a journal owned by root (U cannot
//!   create a root-owned file), not writable by group or others, with one link; a run as a user
//!   only on one of that user's.
//! - [`check_paths`]: what it says. It is this home's journal (its home and owner are the ones
//!   the settings derive now: a journal of another home moved or linked into this one is not),
//!   and every step's paths are the ones the plan derives from the journal's own home and config
//!   dir (`~/.claude`, `~/.claude.json`, the config dir, its `.claude.json`, the directories
//!   above it): a step aimed anywhere else was not written by this tool.

use crate::journal::check_file;
use crate::journal::Journal;
use crate::pathser::show;
use crate::settings::Settings;
use crate::step::Step;
use std::path::Path;

/// The largest journal read: a journal holds paths, small metadata and the previous bytes of
/// two files capped at 1 MiB each, per run.
const MAX_JOURNAL: u64 = 64 << 20;

/// Load the journal of `s.state_dir`, if any: read without following a link at its name and
/// without blocking on a fifo, bounded; then, for a run that will act on it (`acting`: migrate,
/// undo), [`check_file`] and [`check_paths`]. `status` only shows it. Unreadable and untrusted
/// journals are refusals (exit 3) that change nothing.
pub fn load(s: &Settings, acting: bool) -> crate::error::Result<Option<Journal>> {
    use crate::error::{Error, ErrorKind};
    let path = Journal::path(&s.state_dir);
    let aside = || {
        format!(
            "look at it; move it aside only if you are sure: mv '{}' ~/journal.bak",
            show(&path)
        )
    };
    let unreadable = |e: String| {
        Error::new(
            ErrorKind::JournalUnreadable,
            format!("The journal cannot be read: {e}"),
        )
        .with_fix(aside())
    };
    let dir = match crate::safefs::Dir::open(&s.state_dir) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unreadable(format!("{}: {e}", show(&s.state_dir)))),
    };
    let Some((bytes, st)) = dir
        .read_file(
            std::ffi::OsStr::new(crate::journal::JOURNAL_FILE),
            MAX_JOURNAL,
        )
        .map_err(|e| unreadable(format!("{}: {e}", show(&path))))?
    else {
        return Ok(None);
    };
    let untrusted = |why: String| {
        Error::new(
            ErrorKind::JournalUntrusted,
            format!(
                "The journal will not be acted on: {why}. A resumed migration or an undo does \
                 what the journal says, so it must be one this tool wrote for this home."
            ),
        )
        .with_fix(if s.euid == 0 && st.st_uid == s.owner.uid {
            format!(
                "the home's owner wrote it (or an earlier version of this tool did, for them): \
                 run the same command as that user, or, once you have read it and trust it, \
                 sudo chown root:root '{}'",
                show(&path)
            )
        } else {
            aside()
        })
    };
    if acting {
        check_file(&st, s.euid, &path).map_err(untrusted)?;
    }
    let j: Journal = serde_json::from_slice(&bytes).map_err(|e| {
        unreadable(format!(
            "{} is not a journal this version can read: {e}",
            show(&path)
        ))
    })?;
    if acting {
        check_paths(&j, s).map_err(untrusted)?;
    }
    Ok(Some(j))
}

/// What the journal says, against the settings derived now.
pub fn check_paths(j: &Journal, s: &Settings) -> Result<(), String> {
    if j.recorded.home != s.home {
        return Err(format!(
            "the journal is for the home '{}', not '{}'",
            show(&j.recorded.home),
            show(&s.home)
        ));
    }
    if j.recorded.owner_uid != s.owner.uid {
        return Err(format!(
            "the journal is for uid {}, but the home '{}' belongs to uid {}",
            j.recorded.owner_uid,
            show(&s.home),
            s.owner.uid
        ));
    }
    for d in &j.created_state_dirs {
        if !s.state_dir.starts_with(d) || (!d.starts_with(&s.home) && s.euid != s.owner.uid) {
            return Err(format!(
                "the journal claims to have created '{}', which is not on the way to its state \
                 directory '{}'",
                show(d),
                show(&s.state_dir)
            ));
        }
    }
    let claude = j.recorded.home.join(".claude");
    let claude_json = j.recorded.home.join(".claude.json");
    let config = &j.recorded.config_dir;
    let config_json = config.join(".claude.json");
    let bad = |what: &str, p: &Path| {
        Err(format!(
            "the journal's step {what} names '{}', which is not a path this tool derives for \
             the home '{}' and the config dir '{}'",
            show(p),
            show(&j.recorded.home),
            show(config)
        ))
    };
    for e in &j.entries {
        let id = e.step.id();
        match &e.step {
            Step::CreateSharedDir(st) => {
                for d in st.dirs.iter().chain(&e.undo.created_dirs) {
                    if d == config || !config.starts_with(d) {
                        return bad(id, d);
                    }
                }
            }
            Step::CreateConfigDir(st) => {
                if &st.path != config {
                    return bad(id, &st.path);
                }
                for d in &e.undo.created_dirs {
                    if d != config {
                        return bad(id, d);
                    }
                }
            }
            Step::RemoveEmptyClaudeDir(st) => {
                if st.path != claude {
                    return bad(id, &st.path);
                }
            }
            Step::MoveConfig(st) => {
                if st.from != claude {
                    return bad(id, &st.from);
                }
                if &st.to != config {
                    return bad(id, &st.to);
                }
            }
            Step::SecureConfigDir(st) => {
                let uid = st.uid;
                if &st.path != config {
                    return bad(id, &st.path);
                }
                if uid != j.recorded.owner_uid {
                    return Err(format!(
                        "the journal's step {id} hands the config dir to uid {uid}, not to the \
                         home's owner (uid {})",
                        j.recorded.owner_uid
                    ));
                }
            }
            Step::MoveClaudeJson(st) => {
                if st.from != claude_json {
                    return bad(id, &st.from);
                }
                if st.to != config_json {
                    return bad(id, &st.to);
                }
            }
            Step::LinkClaudeDir(st) => {
                if st.link != claude {
                    return bad(id, &st.link);
                }
                if &st.target != config {
                    return bad(id, &st.target);
                }
            }
            Step::LinkClaudeJson(st) => {
                if st.link != claude_json {
                    return bad(id, &st.link);
                }
                if st.target != config_json {
                    return bad(id, &st.target);
                }
            }
            Step::WriteProfile(st) => {
                let path = &st.path;
                for d in &e.undo.created_dirs {
                    if !path.starts_with(d) || d == path {
                        return bad(id, d);
                    }
                }
            }
            Step::RemoveEmptyClaudeJsonDir(st) => {
                if st.path != claude_json {
                    return bad(id, &st.path);
                }
            }
            Step::CreateClaudeJson(st) => {
                if st.path != config_json {
                    return bad(id, &st.path);
                }
            }
            Step::SecureCredentials(st) => {
                if st.path != config.join(".credentials.json") {
                    return bad(id, &st.path);
                }
                if st.uid != j.recorded.owner_uid {
                    return Err(format!(
                        "the journal's step {id} hands the credentials to uid {}, not to the \
                         home's owner (uid {})",
                        st.uid, j.recorded.owner_uid
                    ));
                }
            }
            Step::RewriteLinks(st) => {
                if &st.dir != config {
                    return bad(id, &st.dir);
                }
                for l in &st.links {
                    let inside = l
                        .path
                        .components()
                        .all(|c| matches!(c, std::path::Component::Normal(_)));
                    if !inside {
                        return bad(id, &l.path);
                    }
                }
            }
            Step::WriteEnvFile(_) | Step::Verify(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Entry, State};
    use crate::settings::{Owner, Settings};
    use crate::step::{
        CreateSharedDir, Link, MoveConfig, SecureConfigDir, Verify, Wire, WriteEnvFile,
    };
    use std::path::PathBuf;

    fn settings() -> Settings {
        Settings {
            home: "/home/u".into(),
            owner: Owner {
                uid: 1001,
                gid: 1001,
                name: None,
                shell: None,
            },
            shared_dir: "/srv/shared".into(),
            config_dir: "/srv/shared/config".into(),
            env_file: Some("/opt/f/.env".into()),
            env_file_note: String::new(),
            profile: Some("/home/u/.bashrc".into()),
            shell: crate::profile::ShellKind::Posix,
            state_dir: "/home/u/.local/state/disinto/claude-init".into(),
            agent_uid: 1000,
            agent_uid_given: false,
            euid: 0,
        }
    }

    fn with(step: Step) -> Journal {
        let s = settings();
        let mut j = Journal::new(&s);
        j.created_state_dirs = vec!["/home/u/.local".into()];
        j.entries.push(Entry {
            run: 1,
            step,
            state: State::Done,
            undo: Wire::default(),
        });
        j
    }

    #[test]
    fn the_steps_a_plan_makes_pass() {
        let s = settings();
        for step in [
            Step::CreateSharedDir(CreateSharedDir {
                dirs: vec!["/srv/shared".into()],
            }),
            Step::MoveConfig(MoveConfig {
                from: "/home/u/.claude".into(),
                to: "/srv/shared/config".into(),
                method: crate::plan::Method::Rename,
                files: 1,
                bytes: 1,
            }),
            Step::SecureConfigDir(SecureConfigDir {
                path: "/srv/shared/config".into(),
                uid: 1001,
                gid: 1001,
                chown: true,
            }),
            Step::LinkClaudeJson(Link {
                link: "/home/u/.claude.json".into(),
                target: "/srv/shared/config/.claude.json".into(),
            }),
            Step::WriteEnvFile(WriteEnvFile {
                path: "/opt/f/.env".into(),
            }),
        ] {
            assert_eq!(check_paths(&with(step.clone()), &s), Ok(()), "{step:?}");
        }
    }

    #[test]
    fn steps_aimed_elsewhere_and_other_homes_are_refused() {
        let s = settings();
        for step in [
            Step::CreateSharedDir(CreateSharedDir {
                dirs: vec!["/etc".into()],
            }),
            Step::MoveConfig(MoveConfig {
                from: "/home/u/loot".into(),
                to: "/srv/shared/config".into(),
                method: crate::plan::Method::Rename,
                files: 1,
                bytes: 1,
            }),
            Step::SecureConfigDir(SecureConfigDir {
                path: "/etc/profile.d".into(),
                uid: 1001,
                gid: 1001,
                chown: true,
            }),
            Step::SecureConfigDir(SecureConfigDir {
                path: "/srv/shared/config".into(),
                uid: 1002,
                gid: 1002,
                chown: true,
            }),
            Step::LinkClaudeJson(Link {
                link: "/etc/ld.so.preload".into(),
                target: "/home/u/evil.so".into(),
            }),
        ] {
            assert!(check_paths(&with(step.clone()), &s).is_err(), "{step:?}");
        }
        let mut j = with(Step::Verify(Verify {}));
        j.recorded.home = PathBuf::from("/home/v");
        assert!(check_paths(&j, &s).is_err());
        let mut j = with(Step::Verify(Verify {}));
        j.created_state_dirs = vec!["/etc".into()];
        assert!(check_paths(&j, &s).is_err());
    }

    #[test]
    fn a_root_run_trusts_only_root_s_journal() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("j");
        std::fs::write(&f, b"{}").unwrap();
        let st = nix::sys::stat::stat(&f).unwrap();
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(check_file(&st, me, &f), Ok(()));
        assert!(check_file(&st, me + 1, &f).is_err());
        let mut open = st;
        open.st_mode |= 0o002;
        assert!(check_file(&open, me, &f).is_err());
        let mut linked = st;
        linked.st_nlink = 2;
        assert!(check_file(&linked, me, &f).is_err());
    }
}
