//! Migrating a running factory: `--wait`, and containers that still mount `~/.claude`.
//!
//! `app::migrate` calls three hooks:
//!
//! - [`check`], with the plan, before the prompt (and for `--dry-run`): containers that
//!   bind-mount `~/.claude` are named in the plan (one filesystem: their mount follows the move)
//!   or refused (across filesystems); with `--wait`, processes working in `~/.claude` without
//!   the wrapper's lock are refused, and what the run would wait for is reported;
//! - [`acquire`], after the prompt and before the journal: wait for the agents and take
//!   `~/.claude/session.lock`, then re-check, cheaply (lstat, no walk), that the plan still holds
//!   and that nothing else works in `~/.claude`;
//! - [`release`], once the steps (links, env file, rc file) and the verify are done.
//!
//! Everything slow (the walk, the plan, the checks, the prompt) happens before the lock; under
//! it, on one filesystem, only the journal, the renames, the links and the two file writes.

use crate::error::{Error, ErrorKind, Result};
use crate::layout::{self, Facts, Layout, Node};
use crate::mounts;
use crate::pathser::show;
use crate::plan::{self, Method, Plan, Step};
use crate::report::{Report, WaitReport};
use crate::settings::Settings;
use crate::step::{human_bytes, MoveConfig};
use crate::waiter::{self, Busy, SessionGuard, Targets};
use std::io::{IsTerminal, Write};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

/// Throughput assumed for the estimate of a cross-device copy under the lock (a verified copy
/// measured 190 MB/s and 19,000 files/s to a tmpfs, docs/BENCHMARKS.md; disks are slower).
const EST_BYTES_PER_SEC: u64 = 100 * 1024 * 1024;
const EST_FILES_PER_SEC: u64 = 5_000;

/// The `move-config` step, if the plan runs it.
fn move_config(plan: &Plan) -> Option<(&Method, u64, u64)> {
    plan.runnable().find_map(|st| match st {
        Step::MoveConfig(MoveConfig {
            method,
            files,
            bytes,
            ..
        }) => Some((method, *files, *bytes)),
        _ => None,
    })
}

/// Whether the plan moves, removes or replaces `~/.claude` (or moves `~/.claude.json`): what an
/// agent running now would notice.
pub fn touches_claude(plan: &Plan) -> bool {
    plan.touches_claude()
}

fn is_real_dir(p: &std::path::Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
}

/// Estimated duration of a verified copy of `files` files, `bytes` bytes.
pub fn estimate_copy(files: u64, bytes: u64) -> Duration {
    let s = bytes / EST_BYTES_PER_SEC + files / EST_FILES_PER_SEC;
    Duration::from_secs(s.max(1))
}

/// Add a line to the `move-config` step's detail in the plan.
fn annotate_move(plan: &mut Plan, line: String) {
    if let Some(p) = plan
        .steps
        .iter_mut()
        .find(|p| p.skip.is_none() && matches!(p.step, Step::MoveConfig(_)))
    {
        p.detail = Some(match p.detail.take() {
            Some(d) => format!("{d}\n{line}"),
            None => line,
        });
    }
}

fn session_inode(s: &Settings) -> Option<(u64, u64)> {
    let m = std::fs::symlink_metadata(s.claude_dir().join(waiter::SESSION_LOCK)).ok()?;
    m.is_file().then(|| (m.dev(), m.ino()))
}

fn procs_list(v: &[waiter::Proc]) -> String {
    v.iter()
        .map(|p| format!("{} ({})", p.pid, p.comm))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Processes working in `~/.claude` without the wrapper's lock: a refusal even with `--wait`.
fn unwrapped_refusal(s: &Settings, procs: &[waiter::Proc], locked: bool) -> Error {
    let pids: Vec<String> = procs.iter().map(|p| p.pid.to_string()).collect();
    let why = if locked {
        "while this run holds session.lock"
    } else {
        "outside the factory's wrapper (they do not take session.lock, so they cannot be queued)"
    };
    Error::new(
        ErrorKind::AgentRunning,
        format!(
            "An agent is running: processes have their working directory or open files under '{}' {why}: PID {}. Moving the directory under them would break their run and could lose a refreshed OAuth token; --wait only queues agents that take the wrapper's lock.",
            show(&s.claude_dir()),
            procs_list(procs)
        ),
    )
    .with_fix(format!(
        "let them finish or stop them (kill {}), then re-run: disinto-claude-init --yes --wait",
        pids.join(" ")
    ))
}

/// Before the prompt: containers that mount `~/.claude`, and with `--wait` (`wait` is `Some`)
/// the agents it would wait for. Adds what it finds to the plan (the `move-config` detail) and
/// to the report's notes; refuses (exit 3) what cannot be made safe.
pub fn check(
    plan: &mut Plan,
    s: &Settings,
    wait: Option<Duration>,
    report: &mut Report,
) -> Result<()> {
    if !touches_claude(plan) {
        return Ok(());
    }
    let claude = s.claude_dir();
    if let Some(limit) = wait {
        report.wait = Some(WaitReport {
            limit_s: limit.as_secs(),
            waits_for: Vec::new(),
            holds_lock_for: "switch",
            estimated_hold_s: None,
        });
    }
    if let Some((method, files, bytes)) = move_config(plan).map(|(m, f, b)| (*m, f, b)) {
        if is_real_dir(&claude) {
            containers(plan, s, method, report)?;
            if wait.is_some() && method == Method::VerifiedCopy {
                let est = estimate_copy(files, bytes);
                if let Some(w) = report.wait.as_mut() {
                    w.holds_lock_for = "copy";
                    w.estimated_hold_s = Some(est.as_secs());
                }
                annotate_move(
                    plan,
                    format!(
                        "agents wait while it copies: session.lock is held for the whole copy, about {} s for {files} files, {} (estimated at {} MiB/s)",
                        est.as_secs(),
                        human_bytes(bytes),
                        EST_BYTES_PER_SEC / 1024 / 1024
                    ),
                );
            }
        }
    }
    let Some(limit) = wait else {
        return Ok(());
    };
    if !is_real_dir(&claude) {
        return Ok(());
    }
    let loose = waiter::unwrapped_users(&claude, session_inode(s), true);
    if !loose.is_empty() {
        return Err(unwrapped_refusal(s, &loose, false));
    }
    if !report.dry_run {
        // The real run shows its progress while it waits instead.
        return Ok(());
    }
    let busy = waiter::inspect(&Targets::new(&s.home, &s.config_dir))
        .map_err(|e| e.to_error(&rerun_cmd(limit)))?;
    if busy.is_empty() {
        report.notes.push(format!(
            "--wait: no agent is running now; the switch takes session.lock (agents that start meanwhile wait for it, up to {} s)",
            limit.as_secs()
        ));
    } else {
        for b in &busy {
            report.notes.push(format!(
                "--wait: waits (up to {} s) for {b}, then holds session.lock until the switch is done",
                limit.as_secs()
            ));
        }
    }
    if let Some(w) = report.wait.as_mut() {
        w.waits_for = busy.iter().map(|b| b.to_string()).collect();
    }
    Ok(())
}

/// Containers (processes in other mount namespaces) with `~/.claude` mounted.
fn containers(plan: &mut Plan, s: &Settings, method: Method, report: &mut Report) -> Result<()> {
    // Best effort, like the other /proc checks: a machine without /proc is not refused.
    let scan = match mounts::scan(&s.claude_dir()) {
        Ok(scan) => scan,
        Err(e) => {
            report.warnings.push(format!(
                "could not look for containers that mount '{}': {e}",
                show(&s.claude_dir())
            ));
            return Ok(());
        }
    };
    if scan.mounts.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = scan.mounts.iter().map(|m| m.describe()).collect();
    match method {
        Method::Rename => {
            annotate_move(
                plan,
                format!(
                    "container(s) mount ~/.claude: {}; their mount follows the move (one filesystem: the directory keeps its inode); restart them (disinto up) so they use CLAUDE_CONFIG_DIR",
                    list.join("; ")
                ),
            );
            Ok(())
        }
        Method::VerifiedCopy => {
            let ids: Vec<String> = scan
                .mounts
                .iter()
                .map(|m| match &m.container {
                    Some(c) => c[..12.min(c.len())].to_string(),
                    None => format!("pid {}", m.pid),
                })
                .collect();
            Err(Error::new(
                ErrorKind::ContainerMount,
                format!(
                    "Containers still mount '{}': {}. Across filesystems the migration copies it and removes the original: they would keep the removed directory, and an OAuth token they refresh there would be lost.",
                    show(&s.claude_dir()),
                    list.join("; ")
                ),
            )
            .with_fix(format!(
                "stop them first (they are {}): disinto down && disinto-claude-init --yes && disinto up; or keep the shared dir on the home's filesystem, where the move is a rename their mount follows: disinto-claude-init --yes --shared-dir DIR",
                ids.join(", ")
            )))
        }
    }
}

fn rerun_cmd(limit: Duration) -> String {
    format!(
        "disinto-claude-init --yes --wait {}",
        (limit.as_secs() * 3).max(1800)
    )
}

/// What waiting prints on stderr: on a terminal one line redrawn every second; otherwise a
/// line when what it waits for changes, and every 30 s.
struct Progress {
    tty: bool,
    quiet: bool,
    start: Instant,
    last: Option<(String, Instant)>,
    drawn: bool,
}

impl Progress {
    fn show(&mut self, b: &Busy, limit: Duration) {
        if self.quiet {
            return;
        }
        let msg = format!("waiting for {b}…");
        let elapsed = self.start.elapsed().as_secs();
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[K{msg} ({elapsed} s of {} s)", limit.as_secs());
            let _ = err.flush();
            self.drawn = true;
            return;
        }
        let due = match &self.last {
            Some((m, at)) => *m != msg || at.elapsed() >= Duration::from_secs(30),
            None => true,
        };
        if due {
            let _ = writeln!(err, "{msg} ({elapsed} s of {} s)", limit.as_secs());
            self.last = Some((msg, Instant::now()));
        }
    }
    fn done(&mut self) {
        if self.drawn {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
            self.drawn = false;
        }
    }
}

/// After the prompt: wait (up to `limit`) for the agents and take `session.lock`; then, under
/// it, re-check cheaply that the plan still holds (same layout, same steps, `~/.claude` the
/// same directory; `planned` is what detection found, `None` for a resumed run) and that
/// nothing works in `~/.claude` without the lock. `None` when there is
/// no `~/.claude` directory to lock (nothing of it is moved: the plan creates or links).
pub fn acquire(
    plan: &Plan,
    planned: Option<(Layout, &Facts)>,
    s: &Settings,
    limit: Duration,
    quiet: bool,
) -> Result<Option<SessionGuard>> {
    let claude = s.claude_dir();
    if !touches_claude(plan) {
        return Ok(None);
    }
    // Where session.lock lives now: in ~/.claude, or, for a run resumed after its move, in the
    // config dir (the agents that queued on it hold that inode; new ones cannot open
    // ~/.claude/session.lock until the link is back).
    let lock_dir = if is_real_dir(&claude) {
        claude.clone()
    } else if planned.is_none() && is_real_dir(&s.config_dir) {
        s.config_dir.clone()
    } else {
        return Ok(None);
    };
    let guard = wait_in(&lock_dir, s, limit, quiet, &rerun_cmd(limit))?;
    if lock_dir != claude {
        return Ok(Some(guard));
    }
    // A resumed run's plan comes from its journal, not from detection: nothing to re-detect.
    if let Some((layout, facts)) = planned {
        recheck(plan, layout, facts, s)?;
    }
    let loose = waiter::unwrapped_users(&claude, Some(guard.inode()), false);
    if !loose.is_empty() {
        return Err(unwrapped_refusal(s, &loose, true));
    }
    Ok(Some(guard))
}

/// Wait for the agents and take `session.lock` in `lock_dir`, showing progress on stderr;
/// refuse if `lock_dir` was replaced meanwhile.
fn wait_in(
    lock_dir: &std::path::Path,
    s: &Settings,
    limit: Duration,
    quiet: bool,
    rerun: &str,
) -> Result<SessionGuard> {
    let before = std::fs::symlink_metadata(lock_dir)
        .map(|m| (m.dev(), m.ino()))
        .ok();
    let mut progress = Progress {
        tty: std::io::stderr().is_terminal(),
        quiet,
        start: Instant::now(),
        last: None,
        drawn: false,
    };
    let targets = Targets {
        claude_dir: lock_dir.to_path_buf(),
        ..Targets::new(&s.home, &s.config_dir)
    };
    let res = waiter::wait_for_agents(&targets, limit, &mut |b| progress.show(b, limit));
    progress.done();
    let guard = res.map_err(|e| e.to_error(rerun))?;
    let now = std::fs::symlink_metadata(lock_dir)
        .map(|m| (m.dev(), m.ino()))
        .ok();
    if now != before {
        return Err(changed(&format!(
            "'{}' was replaced by another directory",
            show(lock_dir)
        )));
    }
    Ok(guard)
}

/// `undo --wait`, before the prompt: after a migration the agents' lock file is
/// `<config>/session.lock` (they open it through the `~/.claude` link). Processes working in the
/// config dir without it are refused; a dry run says what it would wait for.
pub fn check_undo(s: &Settings, limit: Duration, report: &mut Report) -> Result<()> {
    if !is_real_dir(&s.config_dir) {
        return Ok(());
    }
    let lock = s.config_dir.join(waiter::SESSION_LOCK);
    let inode = std::fs::symlink_metadata(&lock)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| (m.dev(), m.ino()));
    let loose = waiter::unwrapped_users(&s.config_dir, inode, true);
    if !loose.is_empty() {
        let pids: Vec<String> = loose.iter().map(|p| p.pid.to_string()).collect();
        return Err(Error::new(
            ErrorKind::AgentRunning,
            format!(
                "An agent is running: processes have their working directory or open files under '{}' outside the factory's wrapper (they do not take session.lock, so they cannot be queued): PID {}.",
                show(&s.config_dir),
                procs_list(&loose)
            ),
        )
        .with_fix(format!(
            "let them finish or stop them (kill {}), then re-run: disinto-claude-init undo --yes --wait",
            pids.join(" ")
        )));
    }
    report.wait = Some(WaitReport {
        limit_s: limit.as_secs(),
        waits_for: Vec::new(),
        holds_lock_for: "switch",
        estimated_hold_s: None,
    });
    if report.dry_run {
        let t = Targets {
            claude_dir: s.config_dir.clone(),
            ..Targets::new(&s.home, &s.config_dir)
        };
        let busy = waiter::inspect(&t).map_err(|e| e.to_error(&rerun_undo(limit)))?;
        if let Some(w) = report.wait.as_mut() {
            w.waits_for = busy.iter().map(|b| b.to_string()).collect();
        }
        for b in &busy {
            report.notes.push(format!(
                "--wait: waits (up to {} s) for {b}, then holds session.lock until ~/.claude is back",
                limit.as_secs()
            ));
        }
    }
    Ok(())
}

/// `undo --wait`, after the prompt: wait and take `<config>/session.lock`.
pub fn acquire_undo(s: &Settings, limit: Duration, quiet: bool) -> Result<Option<SessionGuard>> {
    if !is_real_dir(&s.config_dir) {
        return Ok(None);
    }
    wait_in(&s.config_dir, s, limit, quiet, &rerun_undo(limit)).map(Some)
}

fn rerun_undo(limit: Duration) -> String {
    format!(
        "disinto-claude-init undo --yes --wait {}",
        (limit.as_secs() * 3).max(1800)
    )
}

fn changed(what: &str) -> Error {
    Error::new(
        ErrorKind::ChangedWhileWaiting,
        format!("{what} while this run waited for the agents; the plan no longer fits. Nothing was changed."),
    )
    .with_fix("re-run to plan again: disinto-claude-init --yes --wait")
}

/// The plan's layout and steps against what is on disk now, read without a walk (the counts of
/// files and bytes are the plan's: a rename does not need them).
fn recheck(plan: &Plan, planned: Layout, facts: &Facts, s: &Settings) -> Result<()> {
    let read = |p: &std::path::Path| {
        Node::read(p)
            .map_err(|e| Error::new(ErrorKind::Io, format!("cannot inspect '{}': {e}", show(p))))
    };
    let mut f = facts.clone();
    f.claude = read(&s.claude_dir())?;
    f.config = read(&s.config_dir)?;
    f.claude_json = read(&s.claude_json())?;
    f.config_claude_json = read(&s.config_claude_json())?;
    f.inner_claude_json = if matches!(f.claude, Node::Dir { .. }) {
        read(&s.claude_dir().join(".claude.json"))?
    } else {
        Node::Absent
    };
    f.config_canonical = std::fs::canonicalize(&s.config_dir).ok();
    f.missing_dirs = s
        .config_dir
        .parent()
        .map(crate::fsops::missing_dirs)
        .unwrap_or_default();
    let l = layout::detect(&f);
    if l != planned {
        return Err(changed(&format!(
            "The layout went from {} to {}",
            planned.name(),
            l.name()
        )));
    }
    if layout::refusal(l, &f, s).is_some() {
        return Err(changed("The layout now needs an operator"));
    }
    let again = plan::build(l, &f, s);
    let ids = |p: &Plan| p.runnable().map(|st| st.id()).collect::<Vec<_>>();
    if ids(&again) != ids(plan)
        || move_config(&again).map(|m| *m.0) != move_config(plan).map(|m| *m.0)
    {
        return Err(changed("What needs doing changed"));
    }
    Ok(())
}

/// `session.lock` released: how long it was held, how long it took to get.
pub struct Released {
    held: Duration,
    waited: Duration,
    created: bool,
    removed: bool,
}

/// Release `session.lock` now, if it is held (agents waiting for it go on).
pub fn release_now(guard: &mut Option<SessionGuard>) -> Option<Released> {
    let g = guard.take()?;
    let (created, waited) = (g.created(), g.waited());
    let (held, removed) = g.release();
    Some(Released {
        held,
        waited,
        created,
        removed,
    })
}

/// Release `session.lock` (agents waiting for it go on) and say how long it was held. `after`
/// says what was done by then (e.g. "the links and env were in place").
pub fn release(guard: Option<SessionGuard>, after: &str, report: &mut Report) {
    note_release(release_now(&mut { guard }), after, report);
}

/// Say in the report how long `session.lock` was held (see [`release_now`]).
pub fn note_release(r: Option<Released>, after: &str, report: &mut Report) {
    if let Some(r) = r {
        report.notes.push(format!(
            "Agents were held off for {:.1} ms: session.lock was taken after waiting {:.1} s and released once {}{}.",
            r.held.as_secs_f64() * 1000.0,
            r.waited.as_secs_f64(),
            after,
            match (r.created, r.removed) {
                (true, true) => " (it did not exist: it was created for agents to queue on, and removed again)",
                (true, false) => " (it did not exist: it was created for agents to queue on, and an agent has it open now, so it stays)",
                _ => "",
            }
        ));
    }
}
