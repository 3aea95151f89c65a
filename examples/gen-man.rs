//! Writes the man page disinto-claude-init(1) to stdout. Regenerate the checked-in copy with:
//!
//!     cargo run --example gen-man > docs/disinto-claude-init.1
//!
//! The NAME, SYNOPSIS, DESCRIPTION, OPTIONS and COMMANDS sections come from the same clap
//! definitions the binary parses with (`disinto_claude_init::cli::Cli`), through clap_mangen;
//! EXIT STATUS, ENVIRONMENT, FILES and EXAMPLES are written here. `tests/manpage.rs` fails when
//! the checked-in page differs from what this prints.

use clap::CommandFactory;
use disinto_claude_init::cli::Cli;
use std::io::Write;

/// Escape text for roff: backslashes, hyphens (so they stay ASCII hyphens), and a leading
/// control character.
fn esc(s: &str) -> String {
    let t = s.replace('\\', "\\e").replace('-', "\\-");
    if t.starts_with('.') || t.starts_with('\'') {
        format!("\\&{t}")
    } else {
        t
    }
}

/// `.TP` paragraphs: a bold tag and its text.
fn tagged(out: &mut String, items: &[(&str, &str)]) {
    for (tag, text) in items {
        out.push_str(&format!(".TP\n\\fB{}\\fR\n{}\n", esc(tag), esc(text)));
    }
}

const EXIT_STATUS: &[(&str, &str)] = &[
    ("0", "Done, nothing to do, a plan printed (--dry-run), or status ran."),
    ("1", "Failed while applying; everything was rolled back. Nothing changed."),
    ("2", "Usage error (a bad option, a relative path, a home that does not exist). Nothing changed."),
    ("3", "Refused: the layout needs an operator (a conflict, ~/.claude a symlink elsewhere or a file, an agent running, no permission, not enough space). Nothing changed; the message says the command that fixes it."),
    ("4", "Confirmation needed: no terminal and no --yes, or the operator said no. Nothing changed."),
    ("5", "verify found problems (each printed with its fix)."),
    ("6", "A rollback itself failed: manual recovery needed; stderr names the journal."),
];

const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "CLAUDE_SHARED_DIR",
        "The shared directory, when --shared-dir is not given.",
    ),
    (
        "CLAUDE_CONFIG_DIR",
        "The config directory, when --config-dir is not given.",
    ),
    (
        "FACTORY_ROOT",
        "When set, the env file defaults to $FACTORY_ROOT/.env.",
    ),
    (
        "SUDO_USER",
        "Under sudo, the default home is this user's, not root's.",
    ),
    (
        "XDG_STATE_HOME",
        "Where the journal is kept when run as the home's owner (default ~/.local/state).",
    ),
    (
        "NO_COLOR",
        "When set and not empty, human output is not coloured (unless --color always).",
    ),
];

const FILES: &[(&str, &str)] = &[
    ("~/.claude", "Becomes a symlink to the config directory."),
    ("~/.claude.json", "Moved to <config-dir>/.claude.json; a symlink is left in its place."),
    ("<config-dir>", "Default <shared-dir>/config, where <shared-dir> defaults to /var/lib/disinto/claude-shared. Mode 0700, owned by the home's owner."),
    ("~/.local/state/disinto/claude-init/journal.json", "The journal undo reads (under $XDG_STATE_HOME when run as the owner)."),
];

const EXAMPLES: &[(&str, &str)] = &[
    (
        "disinto-claude-init --dry-run",
        "Show what would be done for your own home; change nothing.",
    ),
    (
        "disinto-claude-init",
        "Show the plan, ask, apply it, verify.",
    ),
    (
        "disinto-claude-init --yes --env-file \"$FACTORY_ROOT/.env\"",
        "What disinto init runs: no question, and the two entries written into the factory's .env.",
    ),
    (
        "disinto-claude-init --dry-run --json",
        "The plan as one JSON document (docs/json.md).",
    ),
    (
        "sudo disinto-claude-init --yes",
        "Migrate the home of the user who ran sudo.",
    ),
    (
        "disinto-claude-init verify",
        "Check a migrated home; exit 5 lists the problems.",
    ),
    (
        "disinto-claude-init undo",
        "Put everything back as it was before the migration.",
    ),
    (
        "disinto-claude-init completions bash > /etc/bash_completion.d/disinto-claude-init",
        "Install bash completion.",
    ),
];

/// The page, as bytes of roff.
pub fn man_page() -> Vec<u8> {
    let cmd = Cli::command();
    let man = clap_mangen::Man::new(cmd.clone()).date("");
    let mut out = Vec::new();
    let w = &mut out;
    let ok = "render the man page into memory";
    man.render_title(w).expect(ok);
    // Commands and paths must not be hyphenated at line ends.
    w.extend_from_slice(b".nh\n.ad l\n");
    man.render_name_section(w).expect(ok);
    man.render_synopsis_section(w).expect(ok);
    man.render_description_section(w).expect(ok);
    man.render_options_section(w).expect(ok);

    // One page for everything: list the subcommands here rather than pointing at pages of their
    // own, as clap_mangen's SUBCOMMANDS section does.
    let mut s = String::from(".SH COMMANDS\n");
    s.push_str(
        "With no command, \\fBmigrate\\fR runs. Every option is accepted by every command.\n",
    );
    for sub in cmd.get_subcommands().filter(|c| c.get_name() != "help") {
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        let mut name = sub.get_name().to_string();
        for a in sub.get_positionals() {
            let values: Vec<String> = a
                .get_possible_values()
                .iter()
                .map(|v| v.get_name().to_string())
                .collect();
            if values.is_empty() {
                name.push_str(&format!(" <{}>", a.get_id().as_str().to_uppercase()));
            } else {
                name.push_str(&format!(" <{}>", values.join("|")));
            }
        }
        tagged(&mut s, &[(&name, &about)]);
    }
    s.push_str(".SH \"EXIT STATUS\"\n");
    tagged(&mut s, EXIT_STATUS);
    s.push_str(".SH ENVIRONMENT\n");
    s.push_str("For the two directories the order is: the option, then the environment, then the value already in the env file, then the default.\n");
    tagged(&mut s, ENVIRONMENT);
    s.push_str(".SH FILES\n");
    tagged(&mut s, FILES);
    s.push_str(".SH EXAMPLES\n");
    tagged(&mut s, EXAMPLES);
    s.push_str(".SH \"SEE ALSO\"\n");
    s.push_str("docs/json.md for the \\-\\-json document; docs/disinto\\-init.md for the exit codes as disinto init handles them.\n");
    out.extend_from_slice(s.as_bytes());
    man.render_version_section(&mut out).expect(ok);
    out
}

#[allow(dead_code)] // unused when tests/manpage.rs includes this file as a module
fn main() {
    std::io::stdout()
        .write_all(&man_page())
        .expect("write the man page to stdout");
}
