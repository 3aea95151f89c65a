//! The command line, as clap types only: no behaviour lives here.
//!
//! Every option is accepted by every subcommand (`global = true`), as the contract says, and
//! `migrate` is what runs when no subcommand is given.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Move Claude Code's config from ~/.claude into the disinto factory's shared CLAUDE_CONFIG_DIR.
///
/// Detects the layout, plans a reversible sequence of steps, asks, applies them under a journal
/// that survives a crash, and verifies the result. `--dry-run` shows the plan and changes nothing.
#[derive(Debug, Parser)]
#[command(name = "disinto-claude-init", version, about, long_about)]
// A later occurrence of an option wins, so wrappers can append overrides to a base command.
#[command(args_override_self = true)]
#[command(
    after_help = "Exit codes: 0 done or nothing to do, 1 failed and rolled back, 2 usage, \
3 refused (needs an operator), 4 not confirmed, 5 verify found problems, 6 rollback failed."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub opts: Opts,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Detect, plan, confirm, apply, verify (the default).
    Migrate,
    /// Detect and print the layout; change nothing.
    Status,
    /// Check the migrated layout: exit 0 when healthy, 5 when there are problems.
    Verify,
    /// Reverse the last applied (or interrupted) migration from its journal.
    Undo,
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Migrate => "migrate",
            Command::Status => "status",
            Command::Verify => "verify",
            Command::Undo => "undo",
            Command::Completions { .. } => "completions",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Args)]
pub struct Opts {
    /// Whose ~/.claude to migrate [default: $HOME, or under sudo the home of $SUDO_USER]
    #[arg(long, global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,

    /// The shared directory every container mounts [default: /var/lib/disinto/claude-shared]
    #[arg(long, global = true, value_name = "DIR", env = "CLAUDE_SHARED_DIR")]
    pub shared_dir: Option<PathBuf>,

    /// Claude Code's config directory [default: <shared-dir>/config]
    #[arg(long, global = true, value_name = "DIR", env = "CLAUDE_CONFIG_DIR")]
    pub config_dir: Option<PathBuf>,

    /// The .env to write CLAUDE_SHARED_DIR and CLAUDE_CONFIG_DIR into
    /// [default: $FACTORY_ROOT/.env, else ./.env if it exists, else none]
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        overrides_with = "no_env_file"
    )]
    pub env_file: Option<PathBuf>,

    /// Write no env file (the last of --env-file/--no-env-file wins).
    #[arg(long, global = true, overrides_with = "env_file")]
    pub no_env_file: bool,

    /// The shell rc file to add the export block to [default: by the home owner's login shell]
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        overrides_with = "no_modify_profile"
    )]
    pub profile: Option<PathBuf>,

    /// Leave shell rc files alone (the last of --profile/--no-modify-profile wins).
    #[arg(long, global = true, overrides_with = "profile")]
    pub no_modify_profile: bool,

    /// The uid the factory's containers run Claude as (disinto's images: 1000). When given,
    /// verify (and so migrate) requires it to read and write the config dir and credentials
    #[arg(long, global = true, value_name = "UID", env = "DISINTO_AGENT_UID")]
    pub agent_uid: Option<String>,

    /// Apply without asking.
    #[arg(short = 'y', long, global = true)]
    pub yes: bool,

    /// Print the plan and change nothing.
    #[arg(short = 'n', long, global = true)]
    pub dry_run: bool,

    /// Wait up to SECONDS for running agents instead of refusing: take ~/.claude/session.lock
    /// (the factory's wrapper lock) so that agents queue behind the migration, and hold it
    /// until the switch is done [default: 600, the wrapper's own limit]
    #[arg(
        long,
        global = true,
        value_name = "SECONDS",
        num_args = 0..=1,
        require_equals = false,
        default_missing_value = "600",
        value_parser = clap::value_parser!(u64)
    )]
    pub wait: Option<u64>,

    /// Print one JSON document on stdout instead of human text.
    #[arg(long, global = true)]
    pub json: bool,

    /// Print only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Print more detail.
    #[arg(short, long, global = true)]
    pub verbose: bool,

    /// Colour human output.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN")]
    pub color: ColorChoice,
}
