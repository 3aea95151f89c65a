//! The confirmation prompt, driven through a real pseudo-terminal (rexpect): the plan is shown,
//! then the question; `n` exits 4 with nothing changed, `y` migrates, Ctrl-C exits cleanly with
//! nothing changed and the terminal as it was; `undo` asks too, and `y` restores everything.

mod common;

use common::*;
use nix::sys::termios::{tcgetattr, LocalFlags};
use rexpect::process::WaitStatus;
use rexpect::session::{spawn_with_options, Options, PtySession};
use std::process::Stdio;

const TIMEOUT_MS: u64 = 30_000;

/// The binary on a pty: stdin, stdout and stderr all the terminal (inherited from the pty fork:
/// `World::cmd` would set stdin to /dev/null).
fn spawn(w: &World, sub: Option<&str>) -> PtySession {
    let mut c = w.cmd_bare();
    c.env("TERM", "xterm")
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    if let Some(s) = sub {
        c.arg(s);
    }
    c.args(w.path_args()).args(["--color", "never"]);
    spawn_with_options(
        c,
        Options::new()
            .timeout_ms(Some(TIMEOUT_MS))
            .strip_ansi_escape_codes(false),
    )
    .expect("spawn the binary on a pty")
}

/// Wait for the process to end; its exit code (panics on a signal death, with the reason).
fn exit_code(p: &mut PtySession, transcript: &str) -> i32 {
    match p.process().wait().expect("wait") {
        WaitStatus::Exited(_, code) => code,
        other => panic!("the binary did not exit normally: {other:?}\ntranscript:\n{transcript}"),
    }
}

/// Everything up to and including the prompt.
fn until_prompt(p: &mut PtySession, question: &str) -> String {
    match p.exp_string(question) {
        Ok(before) => before,
        Err(e) => panic!("no prompt {question:?}: {e}"),
    }
}

/// The rest of the output, to EOF.
fn rest(p: &mut PtySession) -> String {
    p.exp_eof().expect("the binary ends")
}

/// The pty's line discipline is back to cooked mode (what a shell expects) and no cursor was
/// left hidden.
fn assert_terminal_restored(p: &PtySession, transcript: &str) {
    let f = p.process().get_file_handle().expect("pty handle");
    let t = tcgetattr(&f).expect("tcgetattr on the pty");
    assert!(
        t.local_flags.contains(LocalFlags::ICANON) && t.local_flags.contains(LocalFlags::ISIG),
        "the terminal was left in raw mode: {:?}",
        t.local_flags
    );
    let hides = transcript.matches("\x1b[?25l").count();
    let shows = transcript.matches("\x1b[?25h").count();
    assert!(
        hides <= shows,
        "the cursor was hidden {hides} time(s) and shown {shows}: left hidden\ntranscript: {transcript:?}"
    );
}

#[test]
fn answering_no_exits_4_and_changes_nothing() {
    let w = World::realistic();
    let before = w.manifest();
    let mut p = spawn(&w, None);
    let shown = until_prompt(&mut p, "Apply this plan?");
    // The plan comes first, readable: the layout, the paths and the steps.
    for want in ["legacy", "move-config", "link-claude-dir", "write-env-file"] {
        assert!(shown.contains(want), "the plan lacks {want}:\n{shown}");
    }
    assert!(
        shown.contains(w.config.to_str().unwrap()),
        "the plan names the config dir:\n{shown}"
    );
    p.send("n").unwrap();
    p.flush().unwrap();
    let tail = rest(&mut p);
    let code = exit_code(&mut p, &tail);
    assert_eq!(code, 4, "answering no must exit 4:\n{tail}");
    assert!(tail.contains("nothing was changed"), "{tail}");
    assert!(tail.contains("fix:"), "{tail}");
    assert_terminal_restored(&p, &format!("{shown}{tail}"));
    assert_same(&before, &w.manifest(), "answered no");
}

#[test]
fn enter_alone_takes_the_default_which_is_no() {
    let w = World::realistic();
    let before = w.manifest();
    let mut p = spawn(&w, None);
    until_prompt(&mut p, "Apply this plan?");
    p.send("\r").unwrap();
    p.flush().unwrap();
    let tail = rest(&mut p);
    assert_eq!(exit_code(&mut p, &tail), 4, "{tail}");
    assert_same(&before, &w.manifest(), "enter alone");
}

#[test]
fn answering_yes_migrates_and_undo_yes_restores() {
    let w = World::realistic();
    let before = w.manifest();
    let mut p = spawn(&w, None);
    until_prompt(&mut p, "Apply this plan?");
    p.send("y").unwrap();
    p.flush().unwrap();
    let tail = rest(&mut p);
    let code = exit_code(&mut p, &tail);
    assert_eq!(code, 0, "answering yes must migrate:\n{tail}");
    assert_eq!(
        std::fs::read_link(w.claude()).expect("~/.claude is a link"),
        w.config
    );
    assert!(tail.contains("done"), "the outcome of each step:\n{tail}");
    assert_terminal_restored(&p, &tail);

    // undo asks too; yes restores the world exactly.
    let mut p = spawn(&w, Some("undo"));
    let shown = until_prompt(&mut p, "Undo the migration?");
    assert!(shown.contains("move-config"), "the undo plan:\n{shown}");
    p.send("y").unwrap();
    p.flush().unwrap();
    let tail = rest(&mut p);
    assert_eq!(exit_code(&mut p, &tail), 0, "undo:\n{tail}");
    assert_terminal_restored(&p, &tail);
    assert_same(&before, &w.manifest(), "migrate then undo, both confirmed");
}

#[test]
fn undo_answered_no_changes_nothing() {
    let w = World::realistic();
    let r = run(w.cmd().arg("--yes"));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let after = w.manifest();
    let mut p = spawn(&w, Some("undo"));
    until_prompt(&mut p, "Undo the migration?");
    p.send("n").unwrap();
    p.flush().unwrap();
    let tail = rest(&mut p);
    assert_eq!(exit_code(&mut p, &tail), 4, "{tail}");
    assert_same(&after, &w.manifest(), "undo answered no");
}

/// Ctrl-C at the prompt: a clean exit (4, "not confirmed", is preferred; death by SIGINT, 130,
/// is acceptable), nothing changed, the terminal back in cooked mode and the cursor visible.
#[test]
fn ctrl_c_at_the_prompt_exits_cleanly_and_changes_nothing() {
    let w = World::realistic();
    let before = w.manifest();
    let mut p = spawn(&w, None);
    let shown = until_prompt(&mut p, "Apply this plan?");
    // Wait until the prompt has put the terminal in raw mode (the key would otherwise reach
    // the line discipline, not the prompt): an event, polled on the pty's own flags.
    let f = p.process().get_file_handle().expect("pty handle");
    let start = std::time::Instant::now();
    while tcgetattr(&f)
        .expect("tcgetattr on the pty")
        .local_flags
        .contains(LocalFlags::ICANON)
    {
        assert!(
            start.elapsed() < RUN_TIMEOUT,
            "the prompt never put the terminal in raw mode"
        );
        std::thread::yield_now();
    }
    p.send_control('c').unwrap();
    let tail = match p.exp_eof() {
        Ok(t) => t,
        Err(e) => panic!("Ctrl-C at the prompt did not end the program: {e}"),
    };
    let status = p.process().wait().expect("wait");
    let code = match status {
        WaitStatus::Exited(_, c) => c,
        WaitStatus::Signaled(_, sig, _) => 128 + sig as i32,
        other => panic!("{other:?}"),
    };
    eprintln!("Ctrl-C at the prompt: {status:?} (exit {code})");
    assert!(
        code == 4 || code == 130,
        "Ctrl-C must exit 4 (not confirmed) or 130, not {code}:\n{tail}"
    );
    assert_terminal_restored(&p, &format!("{shown}{tail}"));
    assert_same(&before, &w.manifest(), "Ctrl-C at the prompt");
}
