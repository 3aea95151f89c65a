//! `verify`'s judgement of the running agents ([`crate::agents`] finds and inspects them; this turns
//! each verdict into a problem with its fix, or a warning). It lives here, above `agents`, so that
//! `agents` never imports `verify`.

use super::Problem;
use crate::agents::*;
use crate::pathser::show;
use nix::libc;
use std::io;
use std::path::Path;

/// What `verify` reports about the agents: a problem for each one that does not share the lock
/// (or, sharing it, cannot create it), with the fix; warnings for those it may not inspect
/// (not root). Nothing when the host's config dir itself is missing (`verify` says so already).
pub(super) fn findings(
    scan: &Scan,
    host: &io::Result<Host>,
    shared_dir: &Path,
    euid: u32,
) -> (Vec<Problem>, Vec<String>) {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let Ok(host) = host else {
        return (problems, warnings);
    };
    let cfg = show(&host.config_dir);
    let shared = show(shared_dir);
    let restart = |a: &Agent| {
        match &a.container {
        Some(c) if c.runtime == "docker" => format!(
            "then recreate that container (docker compose up -d, or docker restart {})",
            &c.id[..12]
        ),
        Some(c) => format!("then restart that container ({} {})", c.runtime, &c.id[..12]),
        None if a.own_mount_namespace => format!(
            "then restart that process (pid {}, in its own mount namespace)",
            a.pid
        ),
        None => format!(
            "restart that Claude (pid {}) with CLAUDE_CONFIG_DIR={cfg} in its environment (or with a HOME whose ~/.claude links to it)",
            a.pid
        ),
    }
    };
    let mount_fix = |a: &Agent| {
        if a.own_mount_namespace || a.container.is_some() {
            format!(
                "mount the whole shared dir at the same path and set CLAUDE_CONFIG_DIR in that container (compose: `volumes: [\"{shared}:{shared}\"]`, `environment: [CLAUDE_CONFIG_DIR={cfg}]`), {}",
                restart(a)
            )
        } else {
            restart(a)
        }
    };
    for a in &scan.agents {
        let who = format!("Claude Code pid {} (uid {}, {})", a.pid, a.uid, a.place());
        if !a.factory {
            // Someone else's Claude (another user, another home, a test): said, not counted.
            if a.verdict == Verdict::CannotRead {
                warnings.push(format!(
                    "{who} could not be inspected: {}.{}",
                    a.reason,
                    if euid != 0 {
                        " To check every agent: sudo disinto-claude-init verify"
                    } else {
                        ""
                    }
                ));
            } else if a.verdict != Verdict::SharesLock {
                warnings.push(format!(
                    "{who} is not counted as one of this factory's agents (no container, not started with its CLAUDE_CONFIG_DIR or CLAUDE_SHARED_DIR, not this home's): {}. If it is one of them: {}",
                    a.reason,
                    mount_fix(a)
                ));
            }
            continue;
        }
        match a.verdict {
            Verdict::SharesLock => {
                if let Some(p) = a.lock_probe.as_ref().filter(|p| !p.ok) {
                    let parent = host.real.parent().unwrap_or(Path::new("/"));
                    problems.push(Problem {
                        kind: "agent-lock-mkdir-fails",
                        message: format!(
                            "{who} shares the lock, but cannot create it: mkdir '{}' as uid {} in its view fails ({}). Its OAuth refreshes will fail.",
                            p.path,
                            a.uid,
                            p.error.as_deref().unwrap_or("?")
                        ),
                        fix: if p.errno == Some(libc::EROFS) {
                            format!(
                                "mount '{shared}' read-write in that container (no `:ro`), {}",
                                restart(a)
                            )
                        } else {
                            format!(
                                "make '{}' writable by uid {}: sudo chown {}:{} '{}'",
                                show(parent),
                                a.uid,
                                a.uid,
                                a.gid,
                                show(parent)
                            )
                        },
                    });
                }
            }
            Verdict::LockNotShared => problems.push(Problem {
                kind: "agent-lock-not-shared",
                message: format!(
                    "{who}: {}. Two refreshes at once make one fail with invalid_grant and force a re-login.",
                    a.reason
                ),
                fix: mount_fix(a),
            }),
            Verdict::OtherConfigDir => problems.push(Problem {
                kind: "agent-other-config-dir",
                message: format!("{who}: {}.", a.reason),
                fix: mount_fix(a),
            }),
            Verdict::CannotRead if euid != 0 => warnings.push(format!(
                "{who} could not be inspected: {}. To check every agent: sudo disinto-claude-init verify",
                a.reason
            )),
            Verdict::CannotRead => problems.push(Problem {
                kind: "agent-unreadable",
                message: format!(
                    "{who} could not be checked: {}. Whether it shares the lock is unknown.",
                    a.reason
                ),
                fix: format!("inspect it: ls -l /proc/{}/root/ && tr '\\0' '\\n' < /proc/{}/environ | grep -E '^(CLAUDE_CONFIG_DIR|HOME)='", a.pid, a.pid),
            }),
        }
    }
    (problems, warnings)
}
