//! The binary: parse, run, print, exit with the contract's code.

use clap::{CommandFactory, Parser};
use disinto_claude_init::app;
use disinto_claude_init::cli::{Cli, Command};
use disinto_claude_init::report;

fn main() -> anyhow::Result<()> {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    if let Some(Command::Completions { shell }) = &cli.command {
        clap_complete::generate(
            *shell,
            &mut Cli::command(),
            "disinto-claude-init",
            &mut std::io::stdout(),
        );
        return Ok(());
    }
    let io = app::Io::detect(&cli.opts);
    let r = app::run(&cli, &io);
    if cli.opts.json {
        report::print_json(&r);
    } else {
        report::print_human(&r, app::verbosity(&cli.opts), &app::style(&cli.opts));
    }
    std::process::exit(r.exit_code);
}
