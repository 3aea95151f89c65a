//! Fault injection for the test suite, compiled only with `--features failpoints`.
//!
//! `DCI_FAILPOINTS=name=action[,name=action...]`, where action is `error` (a plain I/O error, as
//! if the disk had failed) or `kill` (SIGKILL ourselves: a crash at that exact instant). Names are
//! `apply-<step-id>` (before a step changes anything), `applied-<step-id>` (after),
//! `undo-<step-id>`, `copied-move-config` and `placed-move-config` (between the phases of a
//! cross-device move). Release builds carry none of this: the function is empty.

#[cfg(feature = "failpoints")]
pub fn failpoint(name: &str) -> std::io::Result<()> {
    let Ok(spec) = std::env::var("DCI_FAILPOINTS") else {
        return Ok(());
    };
    for item in spec.split(',') {
        let Some((n, action)) = item.split_once('=') else {
            continue;
        };
        if n.trim() != name {
            continue;
        }
        match action.trim() {
            "kill" => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::getpid(),
                    nix::sys::signal::Signal::SIGKILL,
                );
                std::thread::sleep(std::time::Duration::from_secs(10));
            }
            _ => {
                return Err(std::io::Error::other(format!(
                    "injected failure at failpoint {name}"
                )))
            }
        }
    }
    Ok(())
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn failpoint(_name: &str) -> std::io::Result<()> {
    Ok(())
}
