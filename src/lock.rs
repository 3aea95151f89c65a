//! One migration at a time: an exclusive `flock` on the home directory and on the shared dir
//! (or its nearest existing ancestor), held for the whole run.
//!
//! Locking the directories themselves, rather than a lock file, means a refused run creates
//! nothing at all (the contract: a refusal leaves no trace, journal included).

use crate::error::{Error, ErrorKind, Result};
use crate::fsops::nearest_existing;
use crate::pathser::show;
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

pub struct RunLock {
    _locks: Vec<Flock<File>>,
}

impl RunLock {
    pub fn acquire(home: &Path, shared_dir: &Path) -> Result<RunLock> {
        let mut locks: Vec<Flock<File>> = Vec::new();
        let mut seen = Vec::new();
        for p in [home.to_path_buf(), nearest_existing(shared_dir)] {
            let f = File::open(&p).map_err(|e| {
                Error::new(
                    ErrorKind::NoPermission,
                    format!("Cannot open '{}' to lock it: {e}.", show(&p)),
                )
                .with_fix("re-run with sudo")
            })?;
            let m = f
                .metadata()
                .map_err(|e| Error::new(ErrorKind::Io, e.to_string()))?;
            if seen.contains(&(m.dev(), m.ino())) {
                continue;
            }
            seen.push((m.dev(), m.ino()));
            match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
                Ok(l) => locks.push(l),
                Err((_, e)) => {
                    return Err(if e == nix::errno::Errno::EWOULDBLOCK {
                        Error::new(
                        ErrorKind::AlreadyRunning,
                        format!(
                            "Another disinto-claude-init is migrating '{}' right now (it holds the lock on '{}'). Two at once could each move half of the files.",
                            show(home),
                            show(&p)
                        ),
                    )
                    .with_fix("wait for it to finish, then re-run: disinto-claude-init status")
                    } else {
                        Error::new(ErrorKind::Io, format!("Cannot lock '{}': {e}", show(&p)))
                    })
                }
            }
        }
        Ok(RunLock { _locks: locks })
    }
}
