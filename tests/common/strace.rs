//! The real binary under `strace`: kill or pause it at the system calls it makes, not at
//! instants of a clock (issue 8). Needs strace(1) (`.ci/run` installs it).

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

/// Whether strace(1) runs here.
pub fn have_strace() -> bool {
    Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `strace -f -qq -o <trace> <filter...> -- <cmd>` with `cmd`'s program, arguments and (cleared
/// then set) environment.
pub fn straced(cmd: &Command, trace: &Path, filter: &[String]) -> Command {
    // Not --seccomp-bpf: strace 6.1 then counts `when=` differently and never injects.
    let mut c = Command::new("strace");
    c.args(["-f", "-qq", "-o"])
        .arg(trace)
        .args(filter)
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .env_clear();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c.stdin(Stdio::null());
    c
}

/// Run `cmd` under strace, stopped (SIGSTOP, injected by strace) right after each of its
/// `calls` (e.g. `["mkdir", "mkdirat"]`) returns. At each stop, while the whole process is
/// stopped, `at_stop()` runs; the process goes on once it returns. Returns when the process
/// ends: (status, stdout, stderr). Synchronised on strace's own report of each stop.
pub fn run_pausing_after(
    cmd: &Command,
    calls: &[&str],
    mut at_stop: impl FnMut(),
) -> (ExitStatus, String, String) {
    let dir = tempfile::tempdir().expect("tempdir for the trace");
    let trace = dir.path().join("trace");
    let set = calls.join(",");
    let filter = [
        "-e".to_string(),
        format!("trace={set}"),
        "-e".to_string(),
        "signal=SIGSTOP".to_string(),
        "-e".to_string(),
        format!("inject={set}:signal=SIGSTOP"),
    ];
    let mut c = super::Collecting::spawn(&mut straced(cmd, &trace, &filter));
    let child = &mut c.child;
    let mut handled = 0;
    let status = loop {
        let exited = child.try_wait().expect("wait for strace");
        let text = std::fs::read_to_string(&trace).unwrap_or_default();
        // One "<tid> --- stopped by SIGSTOP ---" line per stopped thread.
        let stops: Vec<i32> = text
            .lines()
            .filter(|l| l.ends_with("--- stopped by SIGSTOP ---"))
            .map(|l| l.split(' ').next().unwrap().parse().unwrap())
            .collect();
        for tid in &stops[handled..] {
            at_stop();
            // Continues the whole process (a stop is a group stop).
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*tid),
                nix::sys::signal::Signal::SIGCONT,
            );
        }
        handled = stops.len();
        if let Some(s) = exited {
            break s;
        }
        // Waiting for the next event strace writes, not for a time to pass.
        std::thread::sleep(std::time::Duration::from_millis(1));
    };
    let (stdout, stderr) = c.output();
    (status, stdout, stderr)
}
