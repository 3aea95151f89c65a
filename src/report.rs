//! Output: one `Report` per run, printed for people or as one JSON document for machines.
//!
//! The JSON fields are the contract's (`docs/contract.md`): `command`, `layout`, `dry_run`, `changed`,
//! `home`, `shared_dir`, `config_dir`, `env_file`, `steps: [{id, summary, status}]`, `error`.
//! Human output goes to stdout; errors and warnings to stderr.

use crate::error::{Error, ErrorKind};
use crate::layout::Layout;
use crate::pathser::show;
use crate::settings::Settings;
use crate::verify::Problem;
use serde::Serialize;
use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Planned,
    Done,
    Skipped,
    RolledBack,
    Failed,
}

impl Status {
    pub(crate) fn word(self) -> &'static str {
        match self {
            Status::Planned => "planned",
            Status::Done => "done",
            Status::Skipped => "skipped",
            Status::RolledBack => "rolled-back",
            Status::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub id: &'static str,
    pub summary: String,
    pub status: Status,
    /// Why skipped, or what failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorReport {
    pub kind: ErrorKind,
    pub message: String,
    pub fix: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub command: &'static str,
    pub layout: Option<Layout>,
    pub dry_run: bool,
    pub changed: bool,
    pub home: Option<String>,
    pub shared_dir: Option<String>,
    pub config_dir: Option<String>,
    pub env_file: Option<String>,
    pub profile: Option<String>,
    pub journal: Option<String>,
    /// For `interrupted`: the step the run stopped in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<&'static str>,
    pub steps: Vec<StepReport>,
    pub problems: Vec<Problem>,
    pub warnings: Vec<String>,
    pub error: Option<ErrorReport>,
    pub exit_code: i32,
    /// The running Claude Code processes (`status`, `verify`, and `migrate`'s verify step);
    /// left out of the document when the command did not look.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agents: Option<Vec<crate::agents::Agent>>,
    /// `--wait` (`migrate`, `undo`): what agents would wait for, and for how long; left out
    /// without `--wait`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait: Option<WaitReport>,
    #[serde(skip)]
    pub notes: Vec<String>,
    #[serde(skip)]
    pub env_file_note: Option<String>,
}

/// The `wait` object of `--json`: what `--wait` waits for before it takes `session.lock`, and
/// what agents wait for while the run holds it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WaitReport {
    /// The limit of the wait for the agents, in seconds.
    pub limit_s: u64,
    /// What holds the agents' locks now (a dry run looks; a real run waits instead): one line
    /// each, as the text preview says it.
    pub waits_for: Vec<String>,
    /// What the run does while it holds `session.lock`: `switch` (one filesystem: renames,
    /// links, env; milliseconds) or `copy` (across filesystems: the verified copy).
    pub holds_lock_for: &'static str,
    /// For `copy`: the estimated time agents wait, in seconds.
    pub estimated_hold_s: Option<u64>,
}

impl Report {
    pub fn new(command: &'static str, dry_run: bool) -> Report {
        Report {
            command,
            layout: None,
            dry_run,
            changed: false,
            home: None,
            shared_dir: None,
            config_dir: None,
            env_file: None,
            profile: None,
            journal: None,
            stopped_at: None,
            steps: Vec::new(),
            problems: Vec::new(),
            warnings: Vec::new(),
            error: None,
            exit_code: 0,
            agents: None,
            wait: None,
            notes: Vec::new(),
            env_file_note: None,
        }
    }

    pub(crate) fn set_settings(&mut self, s: &Settings) {
        self.home = Some(show(&s.home));
        self.shared_dir = Some(show(&s.shared_dir));
        self.config_dir = Some(show(&s.config_dir));
        self.env_file = s.env_file.as_deref().map(show);
        self.env_file_note = Some(s.env_file_note.clone());
        self.profile = s.profile.as_deref().map(show);
        self.journal = Some(show(&crate::journal::Journal::path(&s.state_dir)));
    }

    pub fn set_error(&mut self, e: &Error) {
        self.exit_code = e.exit.code();
        self.error = Some(ErrorReport {
            kind: e.kind,
            message: e.message.clone(),
            fix: e.fix.clone(),
        });
    }
}

/// How much to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

/// Colours for people, only when asked for or when stdout is a terminal and NO_COLOR is unset.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
}

impl Style {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    pub(crate) fn bold(&self, s: &str) -> String {
        self.paint("1", s)
    }
    pub(crate) fn green(&self, s: &str) -> String {
        self.paint("32", s)
    }
    pub(crate) fn yellow(&self, s: &str) -> String {
        self.paint("33", s)
    }
    pub(crate) fn red(&self, s: &str) -> String {
        self.paint("31", s)
    }
    pub(crate) fn dim(&self, s: &str) -> String {
        self.paint("2", s)
    }
    fn status(&self, st: Status) -> String {
        let w = format!("{:<11}", st.word());
        match st {
            Status::Done => self.green(&w),
            Status::Skipped | Status::Planned => self.dim(&w),
            Status::RolledBack => self.yellow(&w),
            Status::Failed => self.red(&w),
        }
    }
}

pub fn print_json(r: &Report) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer_pretty(&mut out, r);
    let _ = writeln!(out);
}

fn kv(out: &mut dyn Write, st: &Style, k: &str, v: &str) {
    let _ = writeln!(out, "  {} {v}", st.dim(&format!("{k:<11}")));
}

/// The plan or the outcome, for people.
pub fn print_human(r: &Report, v: Verbosity, st: &Style) {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if v != Verbosity::Quiet {
        if let Some(l) = r.layout {
            let _ = writeln!(out, "{} {}", st.bold("layout:"), st.bold(l.name()));
        }
        if r.command != "completions" && r.home.is_some() {
            kv(&mut out, st, "home", r.home.as_deref().unwrap_or("-"));
            kv(
                &mut out,
                st,
                "shared dir",
                r.shared_dir.as_deref().unwrap_or("-"),
            );
            kv(
                &mut out,
                st,
                "config dir",
                r.config_dir.as_deref().unwrap_or("-"),
            );
            let env = match (&r.env_file, &r.env_file_note) {
                (Some(f), Some(n)) => format!("{f} ({n})"),
                (None, Some(n)) => n.clone(),
                (f, None) => f.clone().unwrap_or_else(|| "none".into()),
            };
            kv(&mut out, st, "env file", &env);
            kv(
                &mut out,
                st,
                "profile",
                r.profile.as_deref().unwrap_or("none (--no-modify-profile)"),
            );
            if v == Verbosity::Verbose {
                kv(&mut out, st, "journal", r.journal.as_deref().unwrap_or("-"));
            }
        }
        if let Some(s) = r.stopped_at {
            let _ = writeln!(
                out,
                "  {} a previous run stopped in step {s}",
                st.yellow("interrupted:")
            );
        }
        if !r.steps.is_empty() {
            let title = if r
                .steps
                .iter()
                .all(|s| matches!(s.status, Status::Planned | Status::Skipped))
            {
                if r.command == "undo" {
                    "undo plan:"
                } else {
                    "plan:"
                }
            } else {
                "steps:"
            };
            let _ = writeln!(out, "{}", st.bold(title));
            let width = r.steps.iter().map(|s| s.id.len()).max().unwrap_or(0);
            for s in &r.steps {
                // After a run every step that ran shows its time; a plan shows none.
                let time = match s.duration_ms {
                    Some(ms) => format!("  {}", st.dim(&human_ms(ms))),
                    None => String::new(),
                };
                let _ = writeln!(
                    out,
                    "  {} {:<width$}  {}{time}",
                    st.status(s.status),
                    s.id,
                    s.summary
                );
                if let Some(d) = &s.detail {
                    // Skip reasons are one short line; a planned step's detail (the exact
                    // lines written) is shown unless -q; failures always.
                    for line in d.lines() {
                        let _ = writeln!(out, "  {:<11} {:<width$}    {}", "", "", st.dim(line));
                    }
                }
            }
        }
        for n in &r.notes {
            let _ = writeln!(out, "{n}");
        }
    }
    drop(out);
    let mut err = std::io::stderr().lock();
    if v != Verbosity::Quiet {
        for w in &r.warnings {
            let _ = writeln!(err, "{} {w}", st.yellow("warning:"));
        }
    }
    for p in &r.problems {
        let _ = writeln!(
            err,
            "{} {}\n  fix: {}",
            st.red("problem:"),
            p.message,
            p.fix
        );
    }
    if let Some(e) = &r.error {
        let _ = writeln!(err, "{} {}", st.red("error:"), e.message);
        if let Some(f) = &e.fix {
            let _ = writeln!(err, "  fix: {f}");
        }
    }
}

fn human_ms(ms: u64) -> String {
    if ms >= 1000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{ms}ms")
    }
}
