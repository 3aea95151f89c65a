//! The commands: wiring of settings, detection, planning, preflight, confirmation, the
//! transaction and verification into what each subcommand does. Returns a `Report`; `main`
//! prints it and exits with its code.

use crate::cli::{Cli, ColorChoice, Command, Opts};
use crate::error::{Error, ErrorKind, ExitCode, Result};
use crate::journal::{Entry, Journal, State};
use crate::layout::{self, Facts, Layout};
use crate::lock::RunLock;
use crate::pathser::show;
use crate::plan::{self, Plan, Planned};
use crate::preflight;
use crate::report::{Report, Status, StepReport, Style, Verbosity};
use crate::settings::{self, ProcessEnv, Requested, Settings};
use crate::step::{Method, MoveConfig, Step, Verify};
use crate::txn::{Event, Outcome, Txn};
use crate::verify;
use std::io::IsTerminal;
use std::path::PathBuf;

/// How the process was invoked, beyond the CLI: whether a person can be asked.
pub struct Io {
    pub interactive: bool,
    pub progress: bool,
}

impl Io {
    pub fn detect(opts: &Opts) -> Io {
        let tty = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
        Io {
            interactive: tty,
            progress: std::io::stderr().is_terminal() && !opts.json && !opts.quiet,
        }
    }
}

pub fn verbosity(o: &Opts) -> Verbosity {
    if o.quiet {
        Verbosity::Quiet
    } else if o.verbose {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    }
}

pub fn style(o: &Opts) -> Style {
    let color = match o.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::io::stdout().is_terminal()
        }
    };
    Style { color }
}

/// Run a command; errors are folded into the report (with their exit code).
pub fn run(cli: &Cli, io: &Io) -> Report {
    let cmd = cli.command.clone().unwrap_or(Command::Migrate);
    let mut report = Report::new(cmd.name(), cli.opts.dry_run);
    let res = (|| -> Result<()> {
        let s = settings::resolve(&Requested::from(&cli.opts), &ProcessEnv::from_process())?;
        report.set_settings(&s);
        if matches!(cmd, Command::Migrate | Command::Undo) {
            settings::refuse_shared_dir_in_foreign_home(&s)?;
        }
        if matches!(cmd, Command::Migrate) {
            settings::check_existing_dirs(&s)?;
        }
        match cmd {
            Command::Migrate => migrate(&s, &cli.opts, io, &mut report),
            Command::Status => status(&s, &mut report),
            Command::Verify => verify_cmd(&s, &mut report),
            Command::Undo => undo(&s, &cli.opts, io, &mut report),
            Command::Completions { .. } => Ok(()),
        }
    })();
    if let Err(e) = res {
        report.set_error(&e);
    } else if !report.problems.is_empty() {
        report.exit_code = ExitCode::Problems.code();
    }
    // A fix pasted as printed must act on the same home and paths as this run did.
    let args = rerun_args(&cli.opts);
    if !args.is_empty() {
        if let Some(e) = report.error.as_mut() {
            e.fix = e.fix.as_deref().map(|f| with_args(f, &args));
        }
        for p in &mut report.problems {
            p.fix = with_args(&p.fix, &args);
        }
    }
    report
}

/// Quote a path for a POSIX shell when it needs it.
pub(crate) fn shell_quote(s: &std::ffi::OsStr) -> String {
    let t = s.to_string_lossy();
    if !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:,@%=".contains(&b))
    {
        t.into_owned()
    } else {
        format!("'{}'", t.replace('\'', "'\\''"))
    }
}

/// The path options this run was given, as they would be typed again.
fn rerun_args(o: &Opts) -> String {
    let mut out = String::new();
    let mut add = |flag: &str, v: Option<&std::path::Path>| {
        out.push(' ');
        out.push_str(flag);
        if let Some(v) = v {
            out.push(' ');
            out.push_str(&shell_quote(v.as_os_str()));
        }
    };
    if let Some(h) = &o.home {
        add("--home", Some(h));
    }
    if let Some(d) = &o.shared_dir {
        add("--shared-dir", Some(d));
    }
    if let Some(d) = &o.config_dir {
        add("--config-dir", Some(d));
    }
    if o.no_env_file {
        add("--no-env-file", None);
    } else if let Some(f) = &o.env_file {
        add("--env-file", Some(f));
    }
    if o.no_modify_profile {
        add("--no-modify-profile", None);
    } else if let Some(f) = &o.profile {
        add("--profile", Some(f));
    }
    out
}

/// Insert `args` after every `disinto-claude-init` command in a fix line.
fn with_args(fix: &str, args: &str) -> String {
    const BIN: &str = "disinto-claude-init";
    let mut out = String::with_capacity(fix.len() + args.len());
    let mut rest = fix;
    while let Some(i) = rest.find(BIN) {
        let end = i + BIN.len();
        out.push_str(&rest[..end]);
        // Only a command word: not `disinto-claude-init.1`, not a path component.
        let next = rest[end..].chars().next();
        if next.is_none_or(|c| c == ' ' || c == ';' || c == ')') && !rest[..i].ends_with('/') {
            out.push_str(args);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn planned_reports(plan: &Plan) -> Vec<StepReport> {
    plan.steps
        .iter()
        .map(|Planned { step, skip, detail }| StepReport {
            id: step.id(),
            summary: step.summary(),
            status: if skip.is_some() {
                Status::Skipped
            } else {
                Status::Planned
            },
            detail: skip.clone().or(detail.clone()),
            duration_ms: None,
        })
        .collect()
}

fn refuse(r: layout::Refusal) -> Error {
    Error::new(r.kind, r.message).with_fix(r.fix)
}

fn io_err(what: &str, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        return Error::new(
            ErrorKind::NoPermission,
            format!("{what}: {e}. Nothing was changed."),
        )
        .with_fix("re-run with sudo, or as the home's owner");
    }
    Error::new(ErrorKind::Io, format!("{what}: {e}. Nothing was changed."))
}

/// Ask, or refuse to go on without asking.
fn confirm(opts: &Opts, io: &Io, question: &str, rerun: &str) -> Result<()> {
    if opts.yes {
        return Ok(());
    }
    if !io.interactive || opts.json {
        return Err(Error::new(ErrorKind::NotConfirmed,
            "Nothing was changed: there is no terminal to ask for confirmation and --yes was not given.",
        )
        .with_fix(rerun.to_string()));
    }
    // Ctrl-C at the prompt: console (under dialoguer) restores the terminal mode, then raises
    // SIGINT on us. With the default action the process dies with the cursor dialoguer hid
    // still hidden. A no-op handler for the prompt's duration lets the read fail instead, so we
    // show the cursor and exit 4 like any other "no".
    extern "C" fn ignore(_: nix::libc::c_int) {}
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let noop = SigAction::new(
        SigHandler::Handler(ignore),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler does nothing, which is async-signal-safe.
    let old = unsafe { sigaction(Signal::SIGINT, &noop) }.ok();
    let term = dialoguer::console::Term::stderr();
    let answer = dialoguer::Confirm::new()
        .with_prompt(question)
        .default(false)
        .interact_on_opt(&term);
    if let Some(old) = old {
        // SAFETY: puts back the disposition we found.
        let _ = unsafe { sigaction(Signal::SIGINT, &old) };
    }
    let _ = term.show_cursor();
    match answer {
        Ok(Some(true)) => Ok(()),
        Ok(_) => Err(Error::new(
            ErrorKind::NotConfirmed,
            "Not confirmed; nothing was changed.",
        )
        .with_fix(rerun.to_string())),
        Err(_) => {
            let _ = term.write_line("");
            Err(Error::new(
                ErrorKind::NotConfirmed,
                "Interrupted at the prompt; nothing was changed.",
            )
            .with_fix(rerun.to_string()))
        }
    }
}

/// The directories whose mtimes a run disturbs, to restore on a full rollback.
fn disturbed_dirs(s: &Settings, steps: &[Step]) -> Vec<PathBuf> {
    let mut v = vec![s.home.clone()];
    v.extend(steps.iter().filter_map(Step::touched_dir));
    v
}

/// A progress bar for a cross-device copy: only on a terminal, never with --json or -q.
/// Files, bytes, rate and ETA, on stderr.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    files: u64,
}

impl Progress {
    fn new(io: &Io, steps: &[Step]) -> Progress {
        let files = steps
            .iter()
            .find_map(|s| match s {
                Step::MoveConfig(MoveConfig { files, .. }) => Some(*files),
                _ => None,
            })
            .unwrap_or(0);
        Progress {
            bar: progress_bar(io, steps),
            files,
        }
    }
    fn update(&self, files: u64, bytes: u64) {
        if let Some(pb) = &self.bar {
            pb.set_position(bytes);
            pb.set_message(format!("{files}/{} files", self.files));
        }
    }
    fn finish(&self) {
        if let Some(pb) = &self.bar {
            pb.finish_and_clear();
        }
    }
}

fn progress_bar(io: &Io, steps: &[Step]) -> Option<indicatif::ProgressBar> {
    let bytes = steps.iter().find_map(|s| match s {
        Step::MoveConfig(MoveConfig {
            method: Method::VerifiedCopy,
            bytes,
            ..
        }) => Some(*bytes),
        _ => None,
    })?;
    if !io.progress {
        return None;
    }
    let pb = indicatif::ProgressBar::with_draw_target(
        Some(bytes),
        indicatif::ProgressDrawTarget::stderr(),
    );
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "copying {bar:30} {bytes}/{total_bytes} {msg} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(pb)
}

fn expect_credentials(s: &Settings, layout: Layout) -> bool {
    layout == Layout::Legacy
        && std::fs::symlink_metadata(s.claude_dir().join(".credentials.json")).is_ok()
}

fn migrate(s: &Settings, opts: &Opts, io: &Io, report: &mut Report) -> Result<()> {
    let _lock = RunLock::acquire(&s.home, &s.shared_dir)?;
    let existing = crate::trust::load(s, true)?;
    if let Some(j) = existing.as_ref().filter(|j| j.interrupted()) {
        return resume(s, j.clone(), opts, io, report);
    }
    let facts = Facts::gather(s).map_err(|e| io_err("cannot inspect the home", e))?;
    let layout = layout::detect(&facts);
    report.layout = Some(layout);
    if let Some(r) = layout::refusal(layout, &facts, s) {
        return Err(refuse(r));
    }
    check_env_encodable(s)?;
    let mut plan = plan::build(layout, &facts, s);
    report.steps = planned_reports(&plan);
    if !plan.changes() {
        report.notes.push("Nothing to do: already migrated.".into());
        if !opts.dry_run {
            clear_leftovers(s, existing.as_ref());
            run_verify(s, false, report);
        }
        return Ok(());
    }
    let wait = opts.wait.map(std::time::Duration::from_secs);
    preflight::check_with(&plan, s, wait.is_some())?;
    crate::live::check(&mut plan, s, wait, report)?;
    report.steps = planned_reports(&plan);
    if opts.dry_run {
        report
            .notes
            .push("Dry run: nothing was changed. Re-run without --dry-run to apply.".into());
        return Ok(());
    }
    if io.interactive && !opts.yes && !opts.json {
        crate::report::print_human(report, verbosity(opts), &style(opts));
        report.steps.clear();
    }
    confirm(
        opts,
        io,
        "Apply this plan?",
        "re-run with --yes to apply: disinto-claude-init --yes",
    )?;
    report.steps = planned_reports(&plan);
    let steps: Vec<Step> = plan.runnable().filter(|st| st.changes()).cloned().collect();
    let had_creds = expect_credentials(s, layout);
    clear_leftovers(s, existing.as_ref());
    let Some(limit) = wait else {
        let (txn, run) = Txn::begin(s, existing, &steps, &disturbed_dirs(s, &steps))?;
        return execute(s, txn, run, io, report, had_creds, None);
    };
    // `--wait`: the first journal is built and synced before the agents' lock is taken; under
    // it only its rename is left (or, refused, it is removed: nothing was changed).
    let prepared = Txn::prepare(s, existing, &steps, &disturbed_dirs(s, &steps))?;
    let guard = match crate::live::acquire(&plan, Some((layout, &facts)), s, limit, opts.quiet) {
        Ok(g) => g,
        Err(e) => {
            prepared.discard();
            return Err(e);
        }
    };
    let (txn, run) = prepared.commit()?;
    execute(s, txn, run, io, report, had_creds, guard)
}

/// What a killed run of the tool can leave that no journal entry undoes: the temp files of a
/// journal write (`.journal.json.dci-tmp-<pid>`) and `verify`'s probe (`<config>.dci-probe-<pid>`),
/// of processes that are gone. Every `migrate` and `undo` that changes something removes them
/// first.
fn clear_leftovers(s: &Settings, j: Option<&Journal>) {
    crate::journal::remove_stale_temps(&s.home, &s.state_dir);
    crate::verify::clear_stale_probes(&s.home, &s.config_dir);
    if let Some(js) = j.map(|j| j.recorded.settings(s)) {
        if js.config_dir != s.config_dir {
            crate::verify::clear_stale_probes(&s.home, &js.config_dir);
        }
    }
}

/// Dotenv cannot hold a path that is not UTF-8: say so before planning.
fn check_env_encodable(s: &Settings) -> Result<()> {
    if s.env_file.is_some() {
        for p in [&s.shared_dir, &s.config_dir] {
            if p.to_str().is_none() {
                return Err(Error::new(
                    ErrorKind::PathNotUtf8,
                    format!(
                        "'{}' is not valid UTF-8, and a .env file cannot hold it.",
                        show(p)
                    ),
                )
                .with_fix("choose a UTF-8 path, or pass --no-env-file"));
            }
        }
    }
    Ok(())
}

/// Apply the run's pending entries (the transaction rolls back by itself on failure); verify
/// on success.
fn execute(
    s: &Settings,
    mut txn: Txn,
    run: u32,
    io: &Io,
    report: &mut Report,
    had_creds: bool,
    guard: Option<crate::waiter::SessionGuard>,
) -> Result<()> {
    let pending: Vec<Step> = txn
        .journal
        .entries
        .iter()
        .filter(|e| e.run == run && e.state != State::Done)
        .map(|e| e.step.clone())
        .collect();
    let pb = Progress::new(io, &pending);
    let progress = |files: u64, bytes: u64| pb.update(files, bytes);
    // `--wait`: the agents queued on session.lock go on as soon as every step is in place
    // (before the journal's last write, which only marks the last step done), or once the
    // steps are rolled back; the verify below only reads.
    let mut guard = guard;
    let mut released = None;
    let res = if guard.is_some() {
        txn.run_then(
            run,
            &progress,
            &mut |e| report_event(report, &e, false),
            &mut || released = crate::live::release_now(&mut guard),
        )
    } else {
        txn.run(run, &progress, &mut |e| report_event(report, &e, false))
    };
    pb.finish();
    crate::live::note_release(
        released.or_else(|| crate::live::release_now(&mut guard)),
        if res.is_ok() {
            "the links and env were in place"
        } else {
            "the steps were rolled back"
        },
        report,
    );
    if let Err(f) = res {
        report.changed = f.changes_left;
        return Err(f.error);
    }
    report.changed = true;
    run_verify(s, had_creds, report);
    Ok(())
}

/// The one place a step's event becomes its line in the report. `undoing`: the `undo`
/// command's lines (each "reverse of" a step), rather than a run's.
fn report_event(report: &mut Report, e: &Event, undoing: bool) {
    let (status, detail, ms) = match (&e.outcome, undoing, e.rollback) {
        (Outcome::Failed(_), _, true) => return, // the failure that matters is the step's
        (Outcome::Undone, false, _) => (Status::RolledBack, None, None),
        (Outcome::Undone, true, _) | (Outcome::Done, ..) => {
            (Status::Done, None, Some(e.duration_ms))
        }
        (Outcome::Failed(m), ..) => (Status::Failed, Some(m.clone()), Some(e.duration_ms)),
    };
    let id = e.step.id();
    let Some(r) = report.steps.iter_mut().find(|r| {
        r.id == id && (r.status == Status::Planned || (!undoing && r.status == Status::Done))
    }) else {
        return;
    };
    r.status = status;
    r.detail = detail;
    if ms.is_some() {
        r.duration_ms = ms;
    }
}

fn run_verify(s: &Settings, had_creds: bool, report: &mut Report) {
    let findings = verify::verify(s, had_creds);
    let status = if findings.problems.is_empty() {
        Status::Done
    } else {
        Status::Failed
    };
    if let Some(r) = report.steps.iter_mut().find(|r| r.id == "verify") {
        r.status = status;
        if !findings.problems.is_empty() {
            r.detail = Some(format!("{} problem(s)", findings.problems.len()));
        }
    }
    report.problems = findings.problems;
    report.warnings.extend(findings.warnings);
    if let Some(scan) = findings.agents {
        // Said only when there is something to say: a migrate usually runs with the factory down.
        if !scan.agents.is_empty() {
            report.notes.push(agent_lines(&scan));
        }
        report.agents = Some(scan.agents);
    }
}

fn journal_plan(j: &Journal, pending_only: bool) -> Plan {
    let last_run = j.entries.iter().map(|e| e.run).max().unwrap_or(0);
    let mut steps: Vec<Planned> = j
        .entries
        .iter()
        .filter(|e| {
            e.run == last_run
                && (!pending_only || matches!(e.state, State::Planned | State::Started))
        })
        .map(|e| Planned {
            step: e.step.clone(),
            skip: None,
            detail: None,
        })
        .collect();
    steps.push(Planned {
        step: Step::Verify(Verify {}),
        skip: None,
        detail: None,
    });
    Plan { steps }
}

fn resume(s: &Settings, j: Journal, opts: &Opts, io: &Io, report: &mut Report) -> Result<()> {
    report.layout = Some(Layout::Interrupted);
    report.stopped_at = j.stopped_at().map(|e| e.step.id());
    let jpath = Journal::path(&s.state_dir);
    if j.undoing {
        return Err(Error::new(
            ErrorKind::UndoInterrupted,
            format!(
                "An undo was interrupted (journal '{}'); finish it before migrating again.",
                show(&jpath)
            ),
        )
        .with_fix("disinto-claude-init undo --yes"));
    }
    let s = j.recorded.settings(s);
    report.set_settings(&s);
    let mut plan = journal_plan(&j, true);
    report.notes.push(format!(
        "A previous run was interrupted in step {}; this run finishes it (or run `disinto-claude-init undo` to reverse it).",
        report.stopped_at.unwrap_or("-")
    ));
    let wait = opts.wait.map(std::time::Duration::from_secs);
    preflight::check_with(&plan, &s, wait.is_some())?;
    crate::live::check(&mut plan, &s, wait, report)?;
    report.steps = planned_reports(&plan);
    if opts.dry_run {
        return Ok(());
    }
    confirm(
        opts,
        io,
        "Finish the interrupted migration?",
        "re-run with --yes to finish it: disinto-claude-init --yes",
    )?;
    let guard = match wait {
        Some(limit) => crate::live::acquire(&plan, None, &s, limit, opts.quiet)?,
        None => None,
    };
    clear_leftovers(&s, Some(&j));
    let txn = Txn::resume(j, &s.state_dir, s.owner_ids());
    let run = txn.last_run();
    execute(&s, txn, run, io, report, false, guard)
}

fn status(s: &Settings, report: &mut Report) -> Result<()> {
    let j = crate::trust::load(s, false)?;
    if let Some(j) = j.filter(|j| j.interrupted()) {
        let s2 = j.recorded.settings(s);
        report.set_settings(&s2);
        report.layout = Some(Layout::Interrupted);
        report.stopped_at = j.stopped_at().map(|e| e.step.id());
        report.steps = j
            .entries
            .iter()
            .map(|e| StepReport {
                id: e.step.id(),
                summary: e.step.summary(),
                status: match e.state {
                    State::Done => Status::Done,
                    State::Undone => Status::RolledBack,
                    // Half done, not failed: `migrate` finishes it, `undo` reverses it.
                    State::Started | State::Planned => Status::Planned,
                },
                detail: (e.state == State::Started).then(|| {
                    "the run stopped in this step (its work may be half done)".to_string()
                }),
                duration_ms: None,
            })
            .collect();
        report.notes.push(if j.undoing {
            "An undo was interrupted: `disinto-claude-init undo` finishes it.".into()
        } else {
            "`disinto-claude-init` finishes the interrupted migration; `disinto-claude-init undo` reverses it.".into()
        });
        return Ok(());
    }
    let facts = Facts::gather(s).map_err(|e| io_err("cannot inspect the home", e))?;
    let layout = layout::detect(&facts);
    report.layout = Some(layout);
    // Who is running now (no probe: status changes nothing).
    let host = crate::agents::Host::for_factory(&s.config_dir, &s.shared_dir, &s.home);
    let agents = crate::agents::scan(&host, false);
    report
        .notes
        .push(format!("~/.claude: {}", facts.claude.describe()));
    report
        .notes
        .push(format!("config dir: {}", facts.config.describe()));
    report
        .notes
        .push(format!("~/.claude.json: {}", facts.claude_json.describe()));
    report.notes.push(agents.summary());
    report.agents = Some(agents.agents);
    if let Some(r) = layout::refusal(layout, &facts, s) {
        report.notes.push(format!(
            "needs an operator: {}\n  fix: {}",
            r.message, r.fix
        ));
    } else {
        let plan = plan::build(layout, &facts, s);
        if plan.changes() {
            report.steps = planned_reports(&plan);
        }
    }
    Ok(())
}

fn verify_cmd(s: &Settings, report: &mut Report) -> Result<()> {
    let facts = Facts::gather(s).map_err(|e| io_err("cannot inspect the home", e))?;
    report.layout = Some(layout::detect(&facts));
    let f = verify::verify(s, false);
    if let Some(scan) = &f.agents {
        report.notes.push(agent_lines(scan));
    }
    if f.problems.is_empty() {
        report.notes.push("Healthy: every check passed.".into());
    }
    report.problems = f.problems;
    report.warnings = f.warnings;
    report.agents = f.agents.map(|scan| scan.agents);
    Ok(())
}

/// `agents: N running, ...` and one line per agent.
fn agent_lines(scan: &crate::agents::Scan) -> String {
    let mut out = scan.summary();
    for a in &scan.agents {
        out.push_str("\n  ");
        out.push_str(&a.line());
    }
    out
}

/// `undo`: load the journal, check that undoing is safe, confirm, execute.
fn undo(s: &Settings, opts: &Opts, io: &Io, report: &mut Report) -> Result<()> {
    let _lock = RunLock::acquire(&s.home, &s.shared_dir)?;
    let Some(j) = undo_load(s, opts, report)? else {
        return Ok(());
    };
    let s = j.recorded.settings(s);
    report.set_settings(&s);
    report.layout = Some(if j.interrupted() {
        Layout::Interrupted
    } else {
        Layout::Migrated
    });
    let todo: Vec<&Entry> = j
        .entries
        .iter()
        .filter(|e| matches!(e.state, State::Started | State::Done))
        .collect();
    report.steps = todo
        .iter()
        .rev()
        .map(|e| StepReport {
            id: e.step.id(),
            summary: format!("reverse of: {}", e.step.summary()),
            status: Status::Planned,
            detail: None,
            duration_ms: None,
        })
        .collect();
    let wait = opts.wait.map(std::time::Duration::from_secs);
    undo_check(&s, &todo, wait.is_some())?;
    if let Some(limit) = wait {
        crate::live::check_undo(&s, limit, report)?;
    }
    if opts.dry_run {
        report.notes.push("Dry run: nothing was changed.".into());
        return Ok(());
    }
    if io.interactive && !opts.yes && !opts.json {
        // The plan above the prompt, as `migrate` shows it.
        crate::report::print_human(report, verbosity(opts), &style(opts));
    }
    confirm(
        opts,
        io,
        "Undo the migration?",
        "re-run with --yes to undo: disinto-claude-init undo --yes",
    )?;
    clear_leftovers(&s, Some(&j));
    let steps: Vec<Step> = todo.iter().map(|e| e.step.clone()).collect();
    let guard = match wait {
        Some(limit) => crate::live::acquire_undo(&s, limit, opts.quiet)?,
        None => None,
    };
    undo_execute(
        &s,
        Txn::resume(j, &s.state_dir, s.owner_ids()),
        &steps,
        io,
        report,
        guard,
    )
}

/// The journal to undo, or `None` (with a note) when there is nothing to undo.
fn undo_load(s: &Settings, opts: &Opts, report: &mut Report) -> Result<Option<Journal>> {
    let j = crate::trust::load(s, true)?;
    if j.is_some() {
        return Ok(j);
    }
    if !opts.dry_run {
        clear_leftovers(s, None);
    }
    if !opts.dry_run && crate::journal::clear_stale_staging(&s.home, &s.state_dir) {
        report.notes.push(
            "Finished the cleanup of a run that was killed before its first journal or at the end of an undo: removed its state directory and put back the directory times it recorded."
                .into(),
        );
    }
    let facts = Facts::gather(s).map_err(|e| io_err("cannot inspect the home", e))?;
    report.layout = Some(layout::detect(&facts));
    report.notes.push(format!(
        "Nothing to undo: there is no journal at '{}'.",
        show(&Journal::path(&s.state_dir))
    ));
    Ok(None)
}

/// Refuse, before anything changes, to clobber an edit, lose files written since, run out of
/// space copying back, or pull the config from under a running agent.
fn undo_check(s: &Settings, todo: &[&Entry], waiting: bool) -> Result<()> {
    // Newest first, as undo runs. A file written by several runs is checked once, against
    // the newest write: the older writes are superseded (see `WriteRecord::superseded`).
    let mut seen = std::collections::HashSet::new();
    for e in todo.iter().rev() {
        if let Some(p) = e.step.written_file() {
            if !seen.insert(p.to_path_buf()) {
                continue;
            }
        }
        if let Err(err) = crate::step::precheck_undo(&e.step, &e.undo) {
            return Err(Error::new(ErrorKind::ChangedSince, err.message).with_fix(
                "put back what the migration wrote (or remove your edit), then re-run: disinto-claude-init undo --yes; to keep your edit, undo the rest by hand (docs/recovery.md)",
            ));
        }
    }
    for e in todo {
        if let Step::MoveConfig(MoveConfig {
            method: Method::VerifiedCopy,
            ..
        }) = &e.step
        {
            let copies_back = MoveConfig::record(&e.undo)
                .map(|r| r.undo_copies_back())
                .unwrap_or(false);
            if copies_back {
                // Blocks and inodes as the copy back will take them, not just file sizes.
                let (bytes, inodes) =
                    preflight::copy_need(&s.config_dir, &s.home).map_err(|e| {
                        io_err("cannot measure the config dir", std::io::Error::other(e))
                    })?;
                preflight::space_check(&s.home, bytes, inodes)?;
            }
        }
    }
    if let Some(found) = preflight::agent_running(s).filter(|_| !waiting) {
        return Err(Error::new(
            ErrorKind::AgentRunning,
            format!("An agent is running: {found}."),
        )
        .with_fix(
            "stop the factory first: disinto down && disinto-claude-init undo --yes && disinto up",
        ));
    }
    Ok(())
}

/// Undo every step in the journal, newest first, and report the layout it leaves.
fn undo_execute(
    s: &Settings,
    mut txn: Txn,
    steps: &[Step],
    io: &Io,
    report: &mut Report,
    guard: Option<crate::waiter::SessionGuard>,
) -> Result<()> {
    let pb = Progress::new(io, steps);
    let progress = |files: u64, bytes: u64| pb.update(files, bytes);
    let mut any = false;
    let res = txn.undo_all(&progress, &mut |e| {
        any = true;
        report_event(report, &e, true)
    });
    pb.finish();
    crate::live::release(
        guard,
        if res.is_ok() {
            "~/.claude was back"
        } else {
            "the undo stopped"
        },
        report,
    );
    report.changed = any;
    res?;
    report.layout = Some(layout::detect(
        &Facts::gather(s).map_err(|e| io_err("cannot inspect the home", e))?,
    ));
    report.notes.push(
        "Undone: ~/.claude, ~/.claude.json, the env file and the rc file are as they were.".into(),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixes_carry_the_options_of_the_run() {
        let a = " --home '/h/my home' --no-env-file";
        assert_eq!(
            with_args("mv x y && disinto-claude-init --yes", a),
            "mv x y && disinto-claude-init --home '/h/my home' --no-env-file --yes"
        );
        assert_eq!(
            with_args("disinto-claude-init", a),
            format!("disinto-claude-init{a}")
        );
        assert_eq!(
            with_args("see docs/disinto-claude-init.1", a),
            "see docs/disinto-claude-init.1"
        );
        assert_eq!(
            shell_quote(std::ffi::OsStr::new("/a b/it's")),
            "'/a b/it'\\''s'"
        );
        assert_eq!(
            shell_quote(std::ffi::OsStr::new("/plain/path")),
            "/plain/path"
        );
    }
}
