//! Fault injection for the test suite, compiled only with `--features failpoints`.
//!
//! `DCI_FAILPOINTS=name=action[,name=action...]`, where action is `error` (a plain I/O error, as
//! if the disk had failed), `kill` (SIGKILL ourselves: a crash at that exact instant) or `pause`
//! (stop right there until the test says go: see below). Names are `apply-<step-id>` (before a
//! step changes anything), `applied-<step-id>` (after), `undo-<step-id>`, `copied-move-config`
//! and `placed-move-config` (between the phases of a cross-device move), and the points inside
//! the phases an attacker would race (see [`hook`]).
//!
//! `pause` makes races deterministic: with `DCI_FAILPOINT_DIR=D`, the process creates
//! `D/<name>.reached`, then waits until `D/<name>.release` exists (polling; at most
//! [`PAUSE_LIMIT`], after which the point fails, or for a [`hook`] carries on with a warning).
//! A point reached again after its release file exists passes straight through, so a point
//! inside a loop pauses once.
//!
//! Release builds carry none of this: the functions are empty.

/// How long a paused point waits for its release file before giving up.
#[cfg(feature = "failpoints")]
pub const PAUSE_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

#[cfg(feature = "failpoints")]
fn action_for(name: &str) -> Option<String> {
    let spec = std::env::var("DCI_FAILPOINTS").ok()?;
    spec.split(',').find_map(|item| {
        let (n, action) = item.split_once('=')?;
        (n.trim() == name).then(|| action.trim().to_string())
    })
}

/// Create `D/<name>.reached`, wait for `D/<name>.release`. Err(why) when there is no
/// `DCI_FAILPOINT_DIR` or the wait ran out.
#[cfg(feature = "failpoints")]
fn pause(name: &str) -> Result<(), String> {
    let Some(dir) = std::env::var_os("DCI_FAILPOINT_DIR") else {
        return Err(format!(
            "failpoint {name}=pause needs DCI_FAILPOINT_DIR (a directory for its files)"
        ));
    };
    let dir = std::path::PathBuf::from(dir);
    let release = dir.join(format!("{name}.release"));
    if release.exists() {
        return Ok(());
    }
    let reached = dir.join(format!("{name}.reached"));
    std::fs::write(&reached, std::process::id().to_string())
        .map_err(|e| format!("failpoint {name}: cannot create {}: {e}", reached.display()))?;
    let start = std::time::Instant::now();
    while !release.exists() {
        if start.elapsed() > PAUSE_LIMIT {
            return Err(format!(
                "failpoint {name}: {} did not appear within {PAUSE_LIMIT:?}",
                release.display()
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    Ok(())
}

#[cfg(feature = "failpoints")]
fn kill_self() {
    let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
    std::thread::sleep(std::time::Duration::from_secs(10));
}

#[cfg(feature = "failpoints")]
pub fn failpoint(name: &str) -> std::io::Result<()> {
    match action_for(name).as_deref() {
        None => Ok(()),
        Some("kill") => {
            kill_self();
            Ok(())
        }
        Some("pause") => pause(name).map_err(std::io::Error::other),
        Some(_) => Err(std::io::Error::other(format!(
            "injected failure at failpoint {name}"
        ))),
    }
}

/// A point inside a phase (the copy, the metadata fixes, a tree removal) where only `pause`
/// and `kill` make sense: it cannot fail, so callers of any error type can carry it.
#[cfg(feature = "failpoints")]
pub fn hook(name: &str) {
    match action_for(name).as_deref() {
        Some("kill") => kill_self(),
        Some("pause") => {
            if let Err(why) = pause(name) {
                eprintln!("{why}; carrying on");
            }
        }
        _ => {}
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn failpoint(_name: &str) -> std::io::Result<()> {
    Ok(())
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hook(_name: &str) {}
