//! Verification of a migrated layout: the last step of every migrate, and `verify` on its own.
//!
//! Each problem names what is wrong and the command that fixes it. Warnings are things that
//! work here but may not in the factory's containers.

use crate::envfile;
use crate::layout::Node;
use crate::pathser::show;
use crate::preflight::{lock_age, STALE_LOCK_AFTER};
use crate::profile;
use crate::settings::Settings;
use serde::Serialize;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

mod agents;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub kind: &'static str,
    pub message: String,
    pub fix: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Findings {
    pub problems: Vec<Problem>,
    pub warnings: Vec<String>,
    /// The running Claude Code processes and whether each shares the lock.
    pub agents: Option<crate::agents::Scan>,
}

/// Check everything. `expect_credentials`: the source had a `.credentials.json`, so the
/// config dir must have it too.
pub fn verify(s: &Settings, expect_credentials: bool) -> Findings {
    let mut f = Findings::default();
    let mut problem =
        |kind, message: String, fix: String| f.problems.push(Problem { kind, message, fix });
    let claude = s.claude_dir();
    let config = &s.config_dir;
    let cfg = show(config);
    let owner = s
        .owner
        .name
        .clone()
        .unwrap_or_else(|| s.owner.uid.to_string());

    // The config dir itself.
    match std::fs::symlink_metadata(config) {
        Err(_) => problem(
            "config-dir-missing",
            format!("The config dir '{cfg}' does not exist. Claude hangs silently when CLAUDE_CONFIG_DIR names a missing directory."),
            "disinto-claude-init --yes".into(),
        ),
        Ok(m) if !m.is_dir() => problem(
            "config-dir-not-a-directory",
            format!("'{cfg}' is not a directory."),
            format!("mv '{cfg}' '{cfg}.bak' && disinto-claude-init --yes"),
        ),
        Ok(m) => {
            let mode = m.permissions().mode() & 0o7777;
            if mode != 0o700 {
                problem(
                    "config-dir-mode",
                    format!("The config dir '{cfg}' is mode {mode:04o}; it holds OAuth credentials and must be 0700."),
                    format!("chmod 0700 '{cfg}'"),
                );
            }
            if m.uid() != s.owner.uid {
                problem(
                    "config-dir-owner",
                    format!("The config dir '{cfg}' is owned by uid {}, not by the home's owner ({owner}, uid {}).", m.uid(), s.owner.uid),
                    format!("sudo chown {}:{} '{cfg}'", s.owner.uid, s.owner.gid),
                );
            }
            if s.agent_uid_given {
                if !can_read_write(&m, s.agent_uid, true) {
                    problem(
                        "agent-cannot-access",
                        agent_message(s, config, &m, "the config dir"),
                        agent_fix(s),
                    );
                }
            } else if m.uid() != s.agent_uid {
                f.warnings.push(format!(
                    "The config dir '{cfg}' is owned by uid {}, but the factory's containers run Claude as uid {} (set DISINTO_AGENT_UID if yours differ): they may not be able to read the credentials. To hand it to them: sudo chown -R {}:{} '{}'",
                    m.uid(),
                    s.agent_uid,
                    s.agent_uid,
                    s.agent_uid,
                    show(&s.shared_dir)
                ));
            }
        }
    }

    // ~/.claude resolves to it.
    let canon_config = std::fs::canonicalize(config).ok();
    match Node::read(&claude) {
        Ok(Node::Symlink { resolves_to: Some(r), .. }) if Some(&r) == canon_config.as_ref() => {}
        Ok(n) => problem(
            "claude-not-linked",
            format!(
                "'{}' is {}, not a link to '{cfg}': host-side Claude without CLAUDE_CONFIG_DIR would use another config.",
                show(&claude),
                n.describe()
            ),
            "disinto-claude-init --yes".into(),
        ),
        Err(e) => problem("claude-unreadable", format!("Cannot inspect '{}': {e}", show(&claude)), "re-run with sudo".into()),
    }

    // Credentials.
    let cred = config.join(".credentials.json");
    match std::fs::symlink_metadata(&cred) {
        Ok(m) => {
            let mode = m.permissions().mode() & 0o7777;
            if s.chown_needed() && (m.uid(), m.gid()) != (s.owner.uid, s.owner.gid) {
                problem(
                    "credentials-owner",
                    format!(
                        "'{}' is owned by {}:{}, not by the config dir's owner ({owner}, {}:{}).",
                        show(&cred),
                        m.uid(),
                        m.gid(),
                        s.owner.uid,
                        s.owner.gid
                    ),
                    "disinto-claude-init --yes   (it makes the credentials 0600 and the owner's)"
                        .into(),
                );
            }
            if s.agent_uid_given && m.is_file() && !can_read_write(&m, s.agent_uid, false) {
                problem(
                    "agent-cannot-access",
                    agent_message(s, &cred, &m, "the credentials"),
                    agent_fix(s),
                );
            }
            if mode != 0o600 {
                problem(
                    "credentials-mode",
                    format!(
                        "'{}' is mode {mode:04o}; OAuth tokens must be 0600.",
                        show(&cred)
                    ),
                    "disinto-claude-init --yes   (it makes the credentials 0600 and the owner's)"
                        .into(),
                );
            }
        }
        Err(_) if expect_credentials => problem(
            "credentials-missing",
            format!(
                "'{}' is missing, though ~/.claude had one before the migration.",
                show(&cred)
            ),
            "disinto-claude-init undo   (the journal knows where everything went)".into(),
        ),
        Err(_) => {}
    }

    // ~/.claude.json lives next to the config.
    let cj = s.claude_json();
    let dest = s.config_claude_json();
    let cj_node = Node::read(&cj);
    if let Ok(Node::File { .. }) = cj_node {
        problem(
            "claude-json-not-migrated",
            format!(
                "'{}' is a real file; with CLAUDE_CONFIG_DIR set Claude reads '{}' instead and would start as if never set up.",
                show(&s.claude_json()),
                show(&s.config_claude_json())
            ),
            "disinto-claude-init --yes".into(),
        );
    } else if let Ok(n) = cj_node {
        let canon_dest = canon_config.as_ref().map(|c| c.join(".claude.json"));
        let linked = match &n {
            Node::Symlink {
                target,
                resolves_to,
            } => {
                let written = if target.is_absolute() {
                    target.clone()
                } else {
                    s.home.join(target)
                };
                written == dest || (resolves_to.is_some() && *resolves_to == canon_dest)
            }
            _ => false,
        };
        if !linked {
            problem(
                "claude-json-not-linked",
                format!(
                    "'{}' is {}, not a link to '{}': host-side Claude without CLAUDE_CONFIG_DIR would keep its account and MCP state elsewhere, and Docker's bind mount of a missing file makes a directory there.",
                    show(&cj),
                    n.describe(),
                    show(&dest)
                ),
                "disinto-claude-init --yes".into(),
            );
        }
    }
    if config.is_dir() && !matches!(Node::read(&dest), Ok(Node::File { .. })) {
        problem(
            "claude-json-missing",
            format!(
                "'{}' is not a regular file: Claude Code with CLAUDE_CONFIG_DIR reads its account and MCP state from it, and the containers' bind mount of ~/.claude.json needs a file to mount.",
                show(&dest)
            ),
            "disinto-claude-init --yes   (it creates the file as {} when there is none)".into(),
        );
    }

    // Links in the config dir: one that resolves to nothing is broken, one that resolves
    // outside the shared dir works on the host but not in a container (it only mounts that).
    if config.is_dir() {
        link_warnings(s, &mut f.warnings);
    }

    // The env file says so, the way `migrate` judges it: healthy exactly when its edit would
    // change nothing (a CRLF entry dotenvy reads right but bash reads with a carriage return is
    // stale, though the values compare equal).
    if let Some(env) = &s.env_file {
        match crate::safefs::read_small(env, crate::settings::MAX_EDITABLE_FILE)
            .and_then(|b| b.ok_or_else(|| std::io::ErrorKind::NotFound.into()))
            .map_err(|e| e.to_string())
            .and_then(|b| {
                envfile::read_values(&b)
                    .map(|v| (b, v))
                    .map_err(|e| e.to_string())
            }) {
            Ok((bytes, v)) => {
                let mut wrong_value = false;
                for (k, want) in [
                    ("CLAUDE_SHARED_DIR", &s.shared_dir),
                    ("CLAUDE_CONFIG_DIR", config),
                ] {
                    let got = v.get(k).map(PathBuf::from);
                    if got.as_ref() != Some(want) {
                        wrong_value = true;
                        problem(
                            "env-file-stale",
                            format!(
                                "The env file '{}' gives {k}={}, not '{}': containers started from it would use another lock path.",
                                show(env),
                                got.map(|g| show(&g)).unwrap_or_else(|| "(unset)".into()),
                                show(want)
                            ),
                            format!("disinto-claude-init --yes --env-file '{}'", show(env)),
                        );
                    }
                }
                let entries = crate::settings::env_entries(s);
                let refs: Vec<(&str, &std::ffi::OsStr)> =
                    entries.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
                match envfile::edit(&bytes, &refs) {
                    Ok(None) => {}
                    Ok(Some(_)) if wrong_value => {} // already reported, value by value
                    Ok(Some(new)) => problem(
                        "env-file-stale",
                        format!(
                            "The env file '{}' gives the right values to dotenvy, but not every reader (bash, docker compose) reads them alike (a carriage return, quoting or a reference); migrate would rewrite:\n{}",
                            show(env),
                            env_changes(&bytes, &new)
                        ),
                        format!("disinto-claude-init --yes --env-file '{}'", show(env)),
                    ),
                    Err(e) => problem(
                        "env-file-unreadable",
                        format!("The env file '{}' cannot be rewritten by migrate: {e}", show(env)),
                        format!("check it: ls -l '{}'", show(env)),
                    ),
                }
            }
            Err(e) => problem(
                "env-file-unreadable",
                format!("The env file '{}' cannot be read back: {e}", show(env)),
                format!("check it: ls -l '{}'", show(env)),
            ),
        }
    }
    if let Some(p) = &s.profile {
        let bytes = crate::safefs::read_small(p, crate::settings::MAX_EDITABLE_FILE)
            .ok()
            .flatten();
        let has = bytes.as_deref().is_some_and(|b| {
            let block = profile::render_block(s.shell, config);
            profile::apply_block(b, &block).is_none()
        });
        // A later line that sets CLAUDE_CONFIG_DIR wins over the block: the user's own, or an
        // old block's leftover. Read, never executed; the tool does not edit the user's lines.
        for o in profile::later_overrides(bytes.as_deref().unwrap_or_default()) {
            let text = String::from_utf8_lossy(&o.text);
            problem(
                "profile-overridden",
                format!(
                    "'{}' line {} ({text}) comes after the block that exports CLAUDE_CONFIG_DIR={cfg} and overrides it: new shells get its value instead.",
                    show(p),
                    o.line
                ),
                format!(
                    "delete or change line {} of '{}' ({}:{}: {text}), then run: disinto-claude-init verify",
                    o.line,
                    show(p),
                    show(p),
                    o.line
                ),
            );
        }
        if !has {
            // A problem, not a warning: `migrate` would add the block, and a healthy layout is
            // exactly one `migrate` leaves as it is (pass `--no-modify-profile` to leave it out).
            problem(
                "profile-stale",
                format!(
                    "'{}' does not export CLAUDE_CONFIG_DIR={cfg}: new shells will not have it.",
                    show(p)
                ),
                "disinto-claude-init --yes   (or pass --no-modify-profile if you manage it yourself)".into(),
            );
        }
    }

    // (Checks below add problems through `f` directly.)
    let mut problem =
        |kind, message: String, fix: String| f.problems.push(Problem { kind, message, fix });

    // A stale proper-lockfile lock makes every refresh retry and give up.
    let [_, config_lock] = crate::preflight::lock_dirs(s);
    if let Some(age) = lock_age(&config_lock) {
        if age >= STALE_LOCK_AFTER {
            problem(
                "stale-lock",
                format!(
                    "'{}' is {} minutes old: a stale OAuth refresh lock. Every refresh will retry and give up (tengu_oauth_token_refresh_lock_retry_limit_reached).",
                    show(&config_lock),
                    age.as_secs() / 60
                ),
                format!("make sure no Claude is running, then: rm -r '{}'", show(&config_lock)),
            );
        }
    }

    // The atomic mkdir proper-lockfile relies on must work next to the config dir, for the owner.
    // The probe's name (`<config>.dci-probe-<pid>`) is one `migrate` and `undo` know: a kill
    // between its mkdir and rmdir strands it, and they remove it (`clear_stale_probes`).
    // (Only when the directory exists: a missing one is already reported above.)
    if let Some(parent) = config.parent().filter(|p| p.is_dir()) {
        let mut probe = config.clone().into_os_string();
        probe.push(format!("{PROBE_TAG}{}", std::process::id()));
        let probe = PathBuf::from(probe);
        crate::failpoint::hook("verify-probe");
        // mkdirat and rmdir in the parent's descriptor, reached without following a link the
        // home's owner could have put on the way (the shared dir is theirs; issue 10). The
        // probe leaves no trace, the parent's mtime included (a verify changes nothing): put
        // back on that same descriptor, unless someone else changed the directory meanwhile.
        let probed = probe
            .file_name()
            .ok_or_else(|| std::io::Error::other("the probe has no name"))
            .and_then(|name| {
                let dir = crate::safefs::open_beneath(&s.home, parent)?;
                crate::safefs::without_trace(std::os::fd::AsFd::as_fd(&dir), || {
                    dir.mkdir_at(name, 0o700).and_then(|()| dir.rmdir(name))
                })
            });
        match probed {
            Ok(()) => {}
            Err(e) => problem(
                "lock-mkdir-fails",
                format!("mkdir next to the config dir ('{}') fails: {e}. Claude's refresh lock needs it.", show(&probe)),
                format!("make '{}' writable by {owner}", show(parent)),
            ),
        }
        if s.euid == 0 && s.owner.uid != 0 {
            if let Ok(m) = std::fs::metadata(parent) {
                let mode = m.permissions().mode();
                let ok = if m.uid() == s.owner.uid {
                    mode & 0o300 == 0o300
                } else if m.gid() == s.owner.gid {
                    mode & 0o030 == 0o030
                } else {
                    mode & 0o003 == 0o003
                };
                if !ok {
                    problem(
                        "lock-mkdir-fails",
                        format!(
                            "'{}' is not writable by {owner}: Claude, running as them, cannot create its refresh lock '{}'.",
                            show(parent),
                            show(&config_lock)
                        ),
                        format!("sudo chown {}:{} '{}'", s.owner.uid, s.owner.gid, show(parent)),
                    );
                }
            }
        }
    }

    // Every running Claude Code, on the host and in each container, must take the same lock.
    let host = crate::agents::Host::for_factory(config, &s.shared_dir, &s.home);
    let scan = crate::agents::scan(&host, true);
    let (problems, warnings) = agents::findings(&scan, &host, &s.shared_dir, s.euid);
    f.problems.extend(problems);
    f.warnings.extend(warnings);
    f.agents = Some(scan);
    f
}

/// The lines `migrate` would remove (`-`) and add (`+`) in the env file, a carriage return shown
/// as `\r` (the difference bash sees and dotenvy does not). Only lines `edit` rewrites (ours)
/// differ, so nothing secret is shown.
fn env_changes(old: &[u8], new: &[u8]) -> String {
    let lines = |b: &[u8]| -> Vec<String> {
        String::from_utf8_lossy(b)
            .split('\n')
            .map(|l| l.replace('\r', "\\r"))
            .collect()
    };
    crate::step::changed_lines(&lines(old), &lines(new), |c, l| format!("  {c} {l}")).join("\n")
}

/// Whether `uid` can read and write (and, for a directory, enter) what `m` describes, by its
/// mode bits: the owner's when it owns it, the group's when the uid's primary group (from this
/// host's password database) is the file's, else the others'. Root can.
fn can_read_write(m: &std::fs::Metadata, uid: u32, dir: bool) -> bool {
    if uid == 0 {
        return true;
    }
    let need = if dir { 0o7 } else { 0o6 };
    let mode = m.permissions().mode();
    let bits = if m.uid() == uid {
        mode >> 6
    } else if nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .is_some_and(|u| u.gid.as_raw() == m.gid())
    {
        mode >> 3
    } else {
        mode
    };
    bits & need == need
}

fn agent_message(
    s: &Settings,
    path: &std::path::Path,
    m: &std::fs::Metadata,
    what: &str,
) -> String {
    format!(
        "{what} '{}' (owned by uid {}, mode {:04o}) cannot be read and written by uid {}, the uid the factory's containers run Claude as (--agent-uid / DISINTO_AGENT_UID): agents could not read the credentials or take the refresh lock. The home's owner is uid {}.",
        show(path),
        m.uid(),
        m.permissions().mode() & 0o7777,
        s.agent_uid,
        s.owner.uid
    )
}

fn agent_fix(s: &Settings) -> String {
    format!(
        "migrate the home of the user with uid {a} instead (--home /home/<that user>), or hand the shared dir to that uid: sudo chown -R {a}:{a} '{}'",
        show(&s.shared_dir),
        a = s.agent_uid
    )
}

/// At most this many links are named; the rest are counted.
const LINKS_NAMED: usize = 20;

/// Warnings for the config dir's symlinks that resolve to nothing, or outside the shared dir.
fn link_warnings(s: &Settings, warnings: &mut Vec<String>) {
    let shared = std::fs::canonicalize(&s.shared_dir).unwrap_or_else(|_| s.shared_dir.clone());
    let mut dangling = Vec::new();
    let mut outside = Vec::new();
    let mut todo = vec![s.config_dir.clone()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            let p = e.path();
            if ft.is_dir() {
                todo.push(p);
            } else if ft.is_symlink() {
                let text = std::fs::read_link(&p).unwrap_or_default();
                match std::fs::canonicalize(&p) {
                    Err(_) => dangling.push((p, text)),
                    Ok(r) if !r.starts_with(&shared) => outside.push((p, text, r)),
                    Ok(_) => {}
                }
            }
        }
    }
    dangling.sort();
    outside.sort();
    for (p, t) in dangling.iter().take(LINKS_NAMED) {
        warnings.push(format!(
            "the link '{}' -> '{}' resolves to nothing: whatever reads it finds no file.",
            show(p),
            show(t)
        ));
    }
    if dangling.len() > LINKS_NAMED {
        warnings.push(format!(
            "{} more links resolve to nothing",
            dangling.len() - LINKS_NAMED
        ));
    }
    for (p, t, r) in outside.iter().take(LINKS_NAMED) {
        warnings.push(format!(
            "the link '{}' -> '{}' resolves to '{}', outside the shared dir '{}': Claude on the host follows it, containers (which only mount the shared dir) cannot. To share it, copy the file in its place.",
            show(p),
            show(t),
            show(r),
            show(&s.shared_dir)
        ));
    }
    if outside.len() > LINKS_NAMED {
        warnings.push(format!(
            "{} more links resolve outside the shared dir",
            outside.len() - LINKS_NAMED
        ));
    }
}

const PROBE_TAG: &str = ".dci-probe-";

/// Remove the probes (`<config>.dci-probe-<pid>`, empty directories) that `verify` runs of
/// processes that are gone left next to the config dir: a kill between the probe's mkdir and its
/// rmdir strands one, and it would keep `undo` from removing a shared dir it created. Returns how
/// many were removed. Best effort: a probe that is not an empty directory is left alone.
pub(crate) fn clear_stale_probes(home: &std::path::Path, config: &std::path::Path) -> usize {
    use std::os::unix::ffi::OsStrExt;
    let (Some(parent), Some(name)) = (config.parent(), config.file_name()) else {
        return 0;
    };
    // Through the parent's descriptor, reached from the home without following a link when
    // it is inside the home (issue 10).
    let Ok(dir) = crate::safefs::open_beneath(home, parent) else {
        return 0;
    };
    let Ok(names) = dir.names() else {
        return 0;
    };
    let mut prefix = name.as_bytes().to_vec();
    prefix.extend_from_slice(PROBE_TAG.as_bytes());
    let mut n = 0;
    for file_name in names {
        let Some(pid) = file_name
            .as_bytes()
            .strip_prefix(&prefix[..])
            .and_then(crate::atomic::parse_pid)
        else {
            continue;
        };
        // rmdir: only an empty directory goes.
        if !crate::atomic::pid_alive(pid) && dir.rmdir(&file_name).is_ok() {
            n += 1;
        }
    }
    if n > 0 {
        let _ = dir.sync();
    }
    n
}
