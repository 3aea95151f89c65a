//! The confirmation prompt, driven through a real pseudo-terminal: the plan is shown, then the
//! question; `n` exits 4 with nothing changed, `y` migrates, Ctrl-C exits cleanly with nothing
//! changed and the terminal as it was; `undo` asks too, and `y` restores everything.
//!
//! The harness (`pty` below) is ours, on `openpty(3)` and `std::process::Command`: the binary
//! gets the pty's slave side as stdin, stdout and stderr and as its controlling terminal (a new
//! session, `TIOCSCTTY`), as a shell would give it; the test reads the master side on a thread
//! and waits for what it expects to appear there (an event), with a generous deadline that only
//! bounds a failure.

mod common;

use common::*;
use nix::sys::termios::{tcgetattr, LocalFlags};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

/// How long to wait for expected output before failing (a bound on failure, never a pause).
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

mod pty {
    use std::fs::File;
    use std::io::{Read, Write};
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command, ExitStatus, Stdio};
    use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
    use std::time::{Duration, Instant};

    /// A child process on the slave side of a fresh pty; the test holds the master side.
    pub struct Pty {
        /// The master side: written to (keys) and asked for the line discipline's flags.
        pub master: File,
        child: Child,
        /// Chunks read from the master by the reader thread; disconnected at EOF.
        rx: Receiver<Vec<u8>>,
        /// Read but not yet consumed by an `expect`.
        pending: Vec<u8>,
        eof: bool,
        timeout: Duration,
    }

    impl Pty {
        /// Spawn `cmd` with the slave side of a new pty as its stdin, stdout, stderr and
        /// controlling terminal.
        pub fn spawn(mut cmd: Command, timeout: Duration) -> std::io::Result<Pty> {
            let p = nix::pty::openpty(None, None)?;
            for fd in [&p.master, &p.slave] {
                // Neither side may leak into the child beyond its stdio (dup2 clears the flag
                // on fds 0-2): a child holding the master, or a stray slave, would hide EOF.
                nix::fcntl::fcntl(
                    fd,
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
                )?;
            }
            let slave = File::from(p.slave);
            cmd.stdin(Stdio::from(slave.try_clone()?))
                .stdout(Stdio::from(slave.try_clone()?))
                .stderr(Stdio::from(slave));
            // SAFETY: setsid(2) and ioctl(2) are async-signal-safe; nothing is allocated.
            unsafe {
                cmd.pre_exec(|| {
                    nix::unistd::setsid()?;
                    if nix::libc::ioctl(0, nix::libc::TIOCSCTTY as _, 0) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let child = cmd.spawn()?;
            // Our copies of the slave side go with the Command: from now on only the child
            // holds it, so the master reads EOF (EIO) once the child and its heirs are gone.
            drop(cmd);
            let master = File::from(p.master);
            let mut reader = master.try_clone()?;
            let (tx, rx) = channel();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match reader.read(&mut buf) {
                        // Linux reports the slave side's last close as EIO on the master.
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if tx.send(buf[..n].to_vec()).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
            Ok(Pty {
                master,
                child,
                rx,
                pending: Vec::new(),
                eof: false,
                timeout,
            })
        }

        /// Take one more chunk of output into `pending`; false at EOF. Panics at the deadline,
        /// with what was seen.
        fn more(&mut self, deadline: Instant, waiting_for: &str) -> bool {
            if self.eof {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(chunk) => {
                    self.pending.extend_from_slice(&chunk);
                    true
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.eof = true;
                    false
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "no {waiting_for} on the terminal within {:?}; it showed:\n{}",
                    self.timeout,
                    String::from_utf8_lossy(&self.pending)
                ),
            }
        }

        /// Everything up to and including the first `want`, consumed; panics if the output
        /// ends or the deadline passes without it.
        pub fn expect(&mut self, want: &str) -> String {
            let deadline = Instant::now() + self.timeout;
            loop {
                let at = self
                    .pending
                    .windows(want.len())
                    .position(|w| w == want.as_bytes());
                if let Some(i) = at {
                    let rest = self.pending.split_off(i + want.len());
                    let got = std::mem::replace(&mut self.pending, rest);
                    return String::from_utf8_lossy(&got).into_owned();
                }
                if !self.more(deadline, &format!("{want:?}")) {
                    panic!(
                        "the output ended without {want:?}; it showed:\n{}",
                        String::from_utf8_lossy(&self.pending)
                    );
                }
            }
        }

        /// The rest of the output, to EOF.
        pub fn rest(&mut self) -> String {
            let deadline = Instant::now() + self.timeout;
            while self.more(deadline, "end of output") {}
            String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned()
        }

        /// Type `bytes` on the terminal.
        pub fn send(&mut self, bytes: &[u8]) {
            self.master.write_all(bytes).expect("write to the pty");
            self.master.flush().expect("flush the pty");
        }

        /// Wait for the child to end (after `rest`, it has closed the terminal).
        pub fn wait(&mut self) -> ExitStatus {
            self.child.wait().expect("wait for the binary")
        }
    }

    impl Drop for Pty {
        fn drop(&mut self) {
            // A failed test must not leave the binary running.
            if let Ok(None) = self.child.try_wait() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

use pty::Pty;

/// The binary on a pty: stdin, stdout and stderr all the terminal (`World::cmd` would set
/// stdin to /dev/null).
fn spawn(w: &World, sub: Option<&str>) -> Pty {
    let mut c = w.cmd_bare();
    c.env("TERM", "xterm");
    if let Some(s) = sub {
        c.arg(s);
    }
    c.args(w.path_args()).args(["--color", "never"]);
    Pty::spawn(c, TIMEOUT).expect("spawn the binary on a pty")
}

/// Wait for the process to end; its exit code (panics on a signal death, with the reason).
fn exit_code(p: &mut Pty, transcript: &str) -> i32 {
    let status: ExitStatus = p.wait();
    match status.code() {
        Some(code) => code,
        None => panic!("the binary did not exit normally: {status:?}\ntranscript:\n{transcript}"),
    }
}

/// Everything up to and including the prompt.
fn until_prompt(p: &mut Pty, question: &str) -> String {
    p.expect(question)
}

/// The rest of the output, to EOF.
fn rest(p: &mut Pty) -> String {
    p.rest()
}

/// The pty's line discipline is back to cooked mode (what a shell expects) and no cursor was
/// left hidden.
fn assert_terminal_restored(p: &Pty, transcript: &str) {
    let t = tcgetattr(&p.master).expect("tcgetattr on the pty");
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
    p.send(b"n");
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
    p.send(b"\r");
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
    p.send(b"y");
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
    p.send(b"y");
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
    p.send(b"n");
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
    let start = std::time::Instant::now();
    while tcgetattr(&p.master)
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
    p.send(b"\x03");
    let tail = p.rest();
    let status = p.wait();
    let code = match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        _ => panic!("{status:?}"),
    };
    eprintln!("Ctrl-C at the prompt: {status:?} (exit {code})");
    assert!(
        code == 4 || code == 130,
        "Ctrl-C must exit 4 (not confirmed) or 130, not {code}:\n{tail}"
    );
    assert_terminal_restored(&p, &format!("{shown}{tail}"));
    assert_same(&before, &w.manifest(), "Ctrl-C at the prompt");
}
