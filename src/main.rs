//! The binary: parse, run, print, exit with the contract's code.

use anyhow::Context;
use clap::{CommandFactory, Parser};
use disinto_claude_init::app;
use disinto_claude_init::cli::{Cli, Command};
use disinto_claude_init::error::ErrorKind;
use disinto_claude_init::report;

fn main() -> anyhow::Result<()> {
    // Arguments are bytes: a path option may hold any non-NUL bytes, and an argument that is
    // not UTF-8 where text is expected is a usage error (exit 2), never a panic.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            // A caller that asked for --json still gets its one document for a usage error.
            if e.use_stderr() && args.iter().any(|a| a == "--json") {
                let command = args
                    .iter()
                    .skip(1)
                    .find_map(|a| {
                        ["migrate", "status", "verify", "undo", "completions"]
                            .into_iter()
                            .find(|c| a == c)
                    })
                    .unwrap_or("migrate");
                let mut r = report::Report::new(command, false);
                let msg = e.render().to_string();
                let first = msg.lines().next().unwrap_or("usage error");
                r.set_error(
                    &disinto_claude_init::error::Error::new(
                        ErrorKind::Usage,
                        first.trim_start_matches("error: ").to_string(),
                    )
                    .with_fix("disinto-claude-init --help"),
                );
                report::print_json(&r);
            }
            std::process::exit(code);
        }
    };
    if let Some(Command::Completions { shell }) = &cli.command {
        let mut buf = Vec::new();
        clap_complete::generate(*shell, &mut Cli::command(), "disinto-claude-init", &mut buf);
        let mut script = String::from_utf8_lossy(&buf).into_owned();
        if *shell == clap_complete::Shell::Bash {
            // clap-rs/clap#6421: the bash generator spells the case labels of subcommands
            // `disinto__subcmd__claude__subcmd__init__...` while its dispatch loop computes
            // `disinto__claude__init__...`, so nothing completes after a subcommand.
            script = script.replace(
                "disinto__subcmd__claude__subcmd__init",
                "disinto__claude__init",
            );
        }
        // `completions bash | head` closes the pipe early: that is not an error.
        match std::io::Write::write_all(&mut std::io::stdout().lock(), script.as_bytes()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => other.context("cannot write the completion script")?,
        }
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
