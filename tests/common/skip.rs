//! Skips that tell the truth (issue 8).
//!
//! libtest captures the stderr of a passing test, so an `eprintln!` + `return` skip looks like a
//! pass in CI's log. `skip!("why")` (or `skipped("why")` in a helper that returns `None`) instead:
//! - prints `skip: <binary>::<test>: <why>` to stderr (seen with `--nocapture`);
//! - appends `<binary>::<test>\t<why>` to the file named by `DCI_SKIP_LOG` (set by
//!   `scripts/test.sh`, which prints every line of it and counts them in its summary);
//! - under `CI=true`, panics (the test FAILS) unless the test is named in `DCI_SKIP_ALLOW`
//!   (a `|`-separated list of `<binary>::<test>`, or `<binary>::*`, that `scripts/test.sh`
//!   exports from its one allow-list): nothing CI's machine can provide may be skipped there.
//!
//! Helpers for other parts of the suite go in new files `tests/common/<name>.rs`, declared in
//! `tests/common/mod.rs` with `mod <name>; pub use <name>::*;`.

use std::io::Write;

/// The name libtest gives the running test's thread (`module::test`), else `?`.
fn test_name() -> String {
    std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .unwrap_or("?")
        .to_string()
}

/// Record that the running test is skipped, for `why`; see the module doc. `binary` is the
/// test binary's crate name (`env!("CARGO_CRATE_NAME")`, which `skip!` passes).
pub fn skipped_in(binary: &str, why: &str) {
    let who = format!("{binary}::{}", test_name());
    let why = why.replace(['\n', '\t'], " ");
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let allowed = std::env::var("DCI_SKIP_ALLOW")
        .unwrap_or_default()
        .split('|')
        .map(str::trim)
        .any(|a| a == who || a == format!("{binary}::*"));
    let verdict = if ci && !allowed {
        "FAILED, skipped under CI=true but not in the allow-list of scripts/test.sh: "
    } else {
        ""
    };
    eprintln!("skip: {who}: {verdict}{why}");
    if let Some(log) = std::env::var_os("DCI_SKIP_LOG") {
        let line = format!("{who}\t{verdict}{why}\n");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("DCI_SKIP_LOG={log:?}: {e}"));
        // One write of one short line to an O_APPEND file: lines of parallel tests do not mix.
        f.write_all(line.as_bytes())
            .unwrap_or_else(|e| panic!("DCI_SKIP_LOG={log:?}: {e}"));
    }
    assert!(
        verdict.is_empty(),
        "{who} skipped under CI=true ({why}): install what it needs in .ci/run, or name it \
         with its reason in the allow-list of scripts/test.sh"
    );
}

/// `skipped_in` for helpers that do not know their binary (`World::cross_device`, `mount_tmpfs`):
/// the test's thread name alone identifies it.
pub fn skipped(why: &str) {
    skipped_in(
        std::env::current_exe()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .as_deref()
            .map(|n| n.rsplit_once('-').map_or(n, |(a, _)| a))
            .unwrap_or("?"),
        why,
    )
}

/// `skip!("why {}", x)`: record the skip (see the module doc) and return from the test.
#[macro_export]
macro_rules! skip {
    ($($arg:tt)*) => {{
        $crate::common::skipped_in(env!("CARGO_CRATE_NAME"), &format!($($arg)*));
        return;
    }};
}
