//! The transaction: runs steps under the journal, rolls back on failure, resumes, undoes.
//!
//! rustup's `Transaction` keeps its rollback list in memory and rolls back on drop; ours keeps
//! it on disk (the journal) so that a kill -9 can be finished or reversed by the next run.

use crate::error::{Error, ErrorKind, Result};
use crate::journal::{self, DirTime, Entry, Journal, State};
use crate::pathser::show;
use crate::step::Step;
use crate::step::{self, Ctx, StepError, Wire};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What happened to one step, for the report.
#[derive(Debug, Clone)]
pub struct Event {
    pub step: Step,
    pub outcome: Outcome,
    pub duration_ms: u64,
    /// Part of the automatic rollback of a failed run (not of the `undo` command).
    pub rollback: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Failed(String),
    Undone,
}

impl Event {
    fn new(step: Step, outcome: Outcome, duration_ms: u64) -> Event {
        Event {
            step,
            outcome,
            duration_ms,
            rollback: false,
        }
    }
}

/// A run that failed and was rolled back (or failed to roll back).
#[derive(Debug)]
pub struct Failed {
    pub error: Error,
    /// The rollback failed with some steps still done: the disk holds changes.
    pub changes_left: bool,
}

/// `step::apply` or `step::undo`.
type StepOp = fn(&Step, &mut Wire, &Ctx, &mut step::Save<Wire>) -> Result<(), StepError>;

pub struct Txn {
    pub journal: Journal,
    pub state_dir: PathBuf,
    /// Give created files to the home's owner.
    pub owner: Option<(u32, u32)>,
}

/// A run prepared by [`Txn::prepare`]: commit it to start changing things, or discard it
/// (nothing was changed: the staged journal goes, the parent's mtime comes back).
pub struct Prepared {
    txn: Txn,
    run: u32,
    is_new: bool,
    staged: Option<journal::Staged>,
}

impl Prepared {
    /// Put the journal in place (the staging directory's rename, or a save of an existing
    /// journal) and hand over the transaction.
    pub fn commit(self) -> Result<(Txn, u32)> {
        let Prepared {
            mut txn,
            run,
            is_new,
            staged,
        } = self;
        let res = match staged {
            Some(st) => st.commit(),
            None if is_new => {
                journal::create_with_journal(&txn.state_dir, txn.owner, &mut txn.journal)
            }
            None => {
                return txn
                    .save()
                    .map(|()| (txn, run))
                    .map_err(|e| Error::new(ErrorKind::Journal, e.message));
            }
        };
        res.map_err(|e| txn.no_journal(e))?;
        Ok((txn, run))
    }

    /// Give up before anything changed (e.g. `--wait` timed out, or the home changed while it
    /// waited): the staged journal is removed.
    pub fn discard(self) {
        if let Some(st) = self.staged {
            st.discard();
        }
    }
}

fn mtime_of(p: &Path) -> Option<(i64, i64)> {
    std::fs::symlink_metadata(p)
        .ok()
        .map(|m| (m.mtime(), m.mtime_nsec()))
}

impl Txn {
    /// The refusal when the first journal cannot be made: nothing was changed.
    fn no_journal(&self, e: std::io::Error) -> Error {
        Error::new(
            ErrorKind::NoPermission,
            format!(
                "Cannot create the journal '{}': {e}. Nothing was changed.",
                show(&self.journal_path())
            ),
        )
        .with_fix("re-run with sudo, or set XDG_STATE_HOME to a writable directory")
    }

    /// Start a run: record the mtimes of the directories it will disturb, create the state dir
    /// if needed, and write the journal with every step `planned` — before anything else changes.
    pub fn begin(
        s: &crate::settings::Settings,
        existing: Option<Journal>,
        steps: &[Step],
        disturbed: &[PathBuf],
    ) -> Result<(Txn, u32)> {
        Txn::prepare(s, existing, steps, disturbed)?.commit()
    }

    /// [`Txn::begin`] in two halves, for `--wait`: everything that does not change what agents
    /// see (the first journal built and synced in its staging directory, the mtimes recorded)
    /// before the agents' lock is taken; [`Prepared::commit`] under it.
    pub fn prepare(
        s: &crate::settings::Settings,
        existing: Option<Journal>,
        steps: &[Step],
        disturbed: &[PathBuf],
    ) -> Result<Prepared> {
        let owner = s.owner_ids();
        if existing.is_none() {
            // A run killed before its first journal was in place left only a staging dir.
            journal::clear_stale_staging(&s.home, &s.state_dir);
        }
        let mut times: Vec<DirTime> = Vec::new();
        let mut dirs: Vec<PathBuf> = disturbed.to_vec();
        dirs.push(crate::fsops::nearest_existing(&s.state_dir));
        for d in dirs {
            if let Some(t) = mtime_of(&d) {
                if !times.iter().any(|x| x.path == d) {
                    times.push(DirTime { path: d, mtime: t });
                }
            }
        }
        let is_new = existing.is_none();
        let mut journal = existing.unwrap_or_else(|| Journal::new(s));
        let run = journal.next_run();
        journal.dir_times.extend(times);
        for st in steps {
            journal.entries.push(Entry {
                run,
                step: st.clone(),
                state: State::Planned,
                undo: Wire::default(),
            });
        }
        let mut txn = Txn {
            journal,
            state_dir: s.state_dir.clone(),
            owner,
        };
        let staged = if is_new {
            // The state dirs and the first journal appear together (one rename), so a kill
            // here leaves nothing that is not recorded in a journal.
            journal::stage_journal(&s.state_dir, owner, &mut txn.journal)
                .map_err(|e| txn.no_journal(e))?
        } else {
            None
        };
        Ok(Prepared {
            txn,
            run,
            is_new,
            staged,
        })
    }

    /// Take up the journal of an interrupted run (to finish it) or of a finished one (to undo
    /// it), acting as the home's owner `owner`.
    pub fn resume(journal: Journal, state_dir: &Path, owner: Option<(u32, u32)>) -> Txn {
        Txn {
            journal,
            state_dir: state_dir.to_path_buf(),
            owner,
        }
    }

    /// The newest run in the journal.
    pub fn last_run(&self) -> u32 {
        self.journal
            .entries
            .iter()
            .map(|e| e.run)
            .max()
            .unwrap_or(1)
    }

    /// Apply run `run`'s pending entries; on the first failure, roll the whole run back (the
    /// caller cannot forget to) and return the contract's error (exit 1, or 6 when the rollback
    /// failed too) with whether changes are left on disk.
    pub fn run(
        &mut self,
        run: u32,
        progress: &(dyn Fn(u64, u64) + Sync),
        on_event: &mut dyn FnMut(Event),
    ) -> std::result::Result<(), Failed> {
        self.run_then(run, progress, on_event, &mut || {})
    }

    /// [`Txn::run`], calling `on_applied` once every step is applied, before the journal's
    /// last write (which only marks the last step `done`: a crash before it leaves that step
    /// `started`, and applying it again is a no-op). `--wait` releases the agents there.
    pub fn run_then(
        &mut self,
        run: u32,
        progress: &(dyn Fn(u64, u64) + Sync),
        on_event: &mut dyn FnMut(Event),
        on_applied: &mut dyn FnMut(),
    ) -> std::result::Result<(), Failed> {
        let mut applied = false;
        let res = self.apply_pending(progress, on_event, &mut || {
            applied = true;
            on_applied()
        });
        let Err((i, err)) = res else {
            return Ok(());
        };
        if applied {
            // Every step is in place and `on_applied` may have let agents use it: rolling back
            // under them would be worse than a journal one write behind. The journal says the
            // last step is `started`; the next run finishes it (a no-op).
            return Err(Failed {
                changes_left: true,
                error: Error::new(
                    ErrorKind::Journal,
                    format!(
                        "Every step was applied, but the journal's last write failed: {}. The journal '{}' still shows the last step as started.",
                        err.message,
                        show(&self.journal_path())
                    ),
                )
                .with_fix("fix the cause above, then re-run to finish: disinto-claude-init --yes"),
            });
        }
        let failed_step = self.journal.entries[i].step.clone();
        let rb = self.undo_entries(&|e| e.run == run, progress, &mut |e| {
            on_event(Event {
                rollback: true,
                ..e
            })
        });
        let any_done = self
            .journal
            .entries
            .iter()
            .any(|e| e.run == run && e.state == State::Done);
        Err(Failed {
            changes_left: rb.is_err() && any_done,
            error: failure(&failed_step, &err, rb, &self.journal_path()),
        })
    }

    /// Undo every started or done entry of every run, newest first (the `undo` command). A file
    /// written by several runs is checked against the newest write only: the older writes are
    /// marked superseded.
    pub fn undo_all(
        &mut self,
        progress: &(dyn Fn(u64, u64) + Sync),
        on_event: &mut dyn FnMut(Event),
    ) -> Result<()> {
        self.journal.undoing = true;
        let mut seen = std::collections::HashSet::new();
        for e in self.journal.entries.iter_mut().rev() {
            if matches!(e.state, State::Started | State::Done) {
                if let Some(p) = e.step.written_file() {
                    e.undo.superseded = !seen.insert(p.to_path_buf());
                }
            }
        }
        self.save()
            .map_err(|e| Error::new(ErrorKind::Journal, e.message))?;
        self.undo_entries(&|_| true, progress, on_event)
            .map_err(|(_, err)| {
                Error::new(
                    ErrorKind::RollbackFailed,
                    format!(
                    "Undo stopped: {}. The journal '{}' records how far it got; nothing is lost.",
                    err.message,
                    show(&self.journal_path())
                ),
                )
                .with_fix("fix the cause above, then re-run: disinto-claude-init undo --yes")
            })
    }

    pub fn journal_path(&self) -> PathBuf {
        Journal::path(&self.state_dir)
    }

    pub fn save(&self) -> Result<(), StepError> {
        self.journal.save(&self.state_dir, self.owner).map_err(|e| {
            StepError::new(format!(
                "cannot write the journal '{}': {e}",
                show(&self.journal_path())
            ))
        })
    }

    /// Run `op` (`step::apply` or `step::undo`) on entry `i`, giving it a `save` that writes
    /// the journal with the entry's undo record as it stands, and keeping that record.
    fn run_on_entry(
        &mut self,
        i: usize,
        progress: &(dyn Fn(u64, u64) + Sync),
        op: StepOp,
    ) -> Result<(), StepError> {
        let step = self.journal.entries[i].step.clone();
        let mut undo = self.journal.entries[i].undo.clone();
        let rec = self.journal.recorded.clone();
        let (home, shared, config) = (&rec.home, &rec.shared_dir, &rec.config_dir);
        let ctx = Ctx {
            owner: self.owner,
            home,
            shared_dir: shared,
            config_dir: config,
            progress,
        };
        let (journal, state_dir, owner) = (&mut self.journal, &self.state_dir, self.owner);
        let mut save = |u: &Wire| -> Result<(), StepError> {
            journal.entries[i].undo = u.clone();
            journal
                .save(state_dir, owner)
                .map_err(|e| StepError::new(format!("cannot write the journal: {e}")))
        };
        let res = op(&step, &mut undo, &ctx, &mut save);
        self.journal.entries[i].undo = undo;
        res
    }

    /// Run `op` (apply or undo) on entry `i`, timed, and report it to `on_event`. On success
    /// `done` records it in the journal and names the outcome (an error there is returned as
    /// the step's, unreported); on failure the journal is saved as it stands (best effort).
    fn step_entry(
        &mut self,
        i: usize,
        progress: &(dyn Fn(u64, u64) + Sync),
        op: StepOp,
        on_event: &mut dyn FnMut(Event),
        done: fn(&mut Self, usize) -> Result<Outcome, StepError>,
    ) -> Result<(), (usize, StepError)> {
        let t0 = Instant::now();
        let step = self.journal.entries[i].step.clone();
        let res = self.run_on_entry(i, progress, op);
        let ms = t0.elapsed().as_millis() as u64;
        let outcome = match &res {
            Ok(()) => done(self, i).map_err(|e| (i, e))?,
            Err(e) => {
                let _ = self.save();
                Outcome::Failed(e.message.clone())
            }
        };
        on_event(Event::new(step, outcome, ms));
        res.map_err(|e| (i, e))
    }

    /// Apply every `planned` or `started` entry, in order. On the first failure, stop and
    /// return its index and error (the caller rolls back).
    fn apply_pending(
        &mut self,
        progress: &(dyn Fn(u64, u64) + Sync),
        on_event: &mut dyn FnMut(Event),
        on_applied: &mut dyn FnMut(),
    ) -> Result<(), (usize, StepError)> {
        for i in 0..self.journal.entries.len() {
            if !matches!(
                self.journal.entries[i].state,
                State::Planned | State::Started
            ) {
                continue;
            }
            // `started` reaches the disk with the step's own first save, which every step makes
            // before its first change (`step::apply`): one journal write per step, not three.
            self.journal.entries[i].state = State::Started;
            self.step_entry(i, progress, step::apply, on_event, |t, i| {
                // `done` is written with the next step's first save, or at the end. A crash
                // before then leaves this step `started`, and applying it again is a no-op.
                t.journal.entries[i].state = State::Done;
                Ok(Outcome::Done)
            })?;
        }
        on_applied();
        self.save()
            .map_err(|e| (self.journal.entries.len().saturating_sub(1), e))
    }

    /// Undo the entries selected by `which` (started or done), newest first, recording progress
    /// in the journal; then drop them from the journal. When the journal ends up empty it is
    /// removed with the state directories made for it, and the disturbed directories get their
    /// mtimes back.
    fn undo_entries(
        &mut self,
        which: &dyn Fn(&Entry) -> bool,
        progress: &(dyn Fn(u64, u64) + Sync),
        on_event: &mut dyn FnMut(Event),
    ) -> Result<(), (usize, StepError)> {
        let idx: Vec<usize> = (0..self.journal.entries.len())
            .filter(|&i| which(&self.journal.entries[i]))
            .collect();
        // A rollback is an undo: if it is killed or fails half way, the journal must say so
        // (`status` reports `interrupted`, `migrate` refuses, `undo` finishes it) rather than
        // look like a finished run with some entries missing. Best effort: a journal that
        // cannot be written must not stop the rollback itself.
        if !self.journal.undoing {
            self.journal.undoing = true;
            let _ = self.save();
        }
        for &i in idx.iter().rev() {
            let state = self.journal.entries[i].state;
            if state == State::Planned || state == State::Undone {
                self.journal.entries[i].state = State::Undone;
                continue;
            }
            self.step_entry(i, progress, step::undo, on_event, |t, i| {
                t.journal.entries[i].state = State::Undone;
                t.save()?;
                Ok(Outcome::Undone)
            })?;
        }
        // Forget what was undone.
        let runs_left: Vec<u32> = self
            .journal
            .entries
            .iter()
            .filter(|e| e.state != State::Undone)
            .map(|e| e.run)
            .collect();
        self.journal.entries.retain(|e| e.state != State::Undone);
        if runs_left.is_empty() {
            journal::finish(
                &self.journal.recorded.home,
                &self.state_dir,
                &self.journal,
                self.owner,
            )
            .map_err(|e| {
                (
                    0,
                    StepError::new(format!(
                        "cannot remove the journal '{}': {e}",
                        show(&self.journal_path())
                    )),
                )
            })?;
        } else {
            self.journal.undoing = false;
            self.save().map_err(|e| (0, e))?;
        }
        Ok(())
    }
}

/// Turn a failed apply + its rollback into the contract's error (exit 1 or 6).
fn failure(
    step: &Step,
    err: &StepError,
    rollback: std::result::Result<(), (usize, StepError)>,
    journal: &Path,
) -> Error {
    match rollback {
        Ok(()) => Error::new(
            ErrorKind::ApplyFailed,
            format!(
                "Step {} failed: {}. Everything done before it was rolled back; nothing was changed.",
                step.id(),
                err.message
            ),
        )
        .with_fix("fix the cause above and re-run: disinto-claude-init --yes"),
        Err((_, e2)) => Error::new(ErrorKind::RollbackFailed, format!(
            "Step {} failed: {}. Rolling back then failed too: {}. The journal '{}' records what was done and what is left.",
            step.id(),
            err.message,
            e2.message,
            show(journal)
        ))
        .with_fix(format!(
            "fix the cause, then run: disinto-claude-init undo --yes   (see docs/recovery.md; the journal is {})",
            show(journal)
        )),
    }
}
