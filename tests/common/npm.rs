//! Real npm packages for the tests (issue 11 item 7): installed from the npm registry with the
//! ordinary client, pinned, into a cache under `target/` (`CARGO_TARGET_TMPDIR/npm`), never
//! globally. One directory per `name@version`; an exclusive `flock` on a lock file next to it
//! makes parallel test binaries install each package once, and a marker written after a
//! successful install (and checked against the installed `package.json`) makes later runs reuse
//! it.
//!
//! These tests must not skip in CI: a missing `node`/`npm` or a failed install is a test failure.
//! Only an explicit `DCI_SKIP_REAL_CLIENTS=1` turns them into a loud skip (for a machine without
//! the registry), and `require_real_clients` prints that it did.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::fcntl::{Flock, FlockArg};

/// Where the packages go: `target/tmp/npm` (under the build directory, removed by `cargo clean`).
pub fn cache_root() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("npm")
}

/// True when the real-client tests should run; false (after saying so on stderr) only when the
/// operator set `DCI_SKIP_REAL_CLIENTS=1`.
pub fn require_real_clients(test: &str) -> bool {
    if std::env::var_os("DCI_SKIP_REAL_CLIENTS").is_some_and(|v| v == "1") {
        eprintln!("SKIPPED (DCI_SKIP_REAL_CLIENTS=1): {test} needs node and the npm registry");
        return false;
    }
    true
}

/// An installed package: its prefix and its `node_modules/<name>` directory.
pub struct Package {
    pub prefix: PathBuf,
    pub dir: PathBuf,
}

impl Package {
    /// `node_modules/.bin/<bin>`.
    pub fn bin(&self, bin: &str) -> PathBuf {
        self.prefix.join("node_modules/.bin").join(bin)
    }
}

/// Install `name@version` (exact version) unless it already is; panics with npm's output when
/// the install fails.
pub fn install(name: &str, version: &str) -> Package {
    let root = cache_root();
    fs::create_dir_all(&root).expect("create the npm cache dir under target/");
    let slug = format!("{}@{version}", name.replace('/', "+"));
    let prefix = root.join(&slug);
    let dir = prefix.join("node_modules").join(name);
    let marker = prefix.join(".dci-installed");

    let lock_file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join(format!("{slug}.lock")))
        .expect("open the npm install lock");
    let _lock = Flock::lock(lock_file, FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("flock the npm install lock: {e}"));

    if marker.exists() && installed_version(&dir).as_deref() == Some(version) {
        return Package { prefix, dir };
    }
    let _ = fs::remove_dir_all(&prefix);
    fs::create_dir_all(&prefix).unwrap();
    // A package.json of our own so npm treats `prefix` as the project (not some parent's).
    fs::write(
        prefix.join("package.json"),
        format!(
            "{{\"name\":\"dci-{}\",\"private\":true}}\n",
            slug.replace(['@', '+', '.'], "-")
        ),
    )
    .unwrap();
    let out = Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--no-update-notifier",
            "--save-exact",
        ])
        .arg("--cache")
        .arg(root.join(".npm-cache"))
        .arg("--prefix")
        .arg(&prefix)
        .arg(format!("{name}@{version}"))
        .env("npm_config_update_notifier", "false")
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run npm ({e}): install Node.js and npm (Debian: apt-get install -y nodejs npm)")
        });
    assert!(
        out.status.success(),
        "npm install {name}@{version} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let got = installed_version(&dir);
    assert_eq!(
        got.as_deref(),
        Some(version),
        "npm installed {name} but not version {version}"
    );
    fs::write(&marker, version).unwrap();
    Package { prefix, dir }
}

fn installed_version(dir: &Path) -> Option<String> {
    let text = fs::read_to_string(dir.join("package.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("version")?.as_str().map(str::to_owned)
}

/// The real `claude` at `bin` as the tests run it: in `home` with a clean environment that keeps
/// it offline and quiet (no auto-update, telemetry, error reports or other non-essential
/// traffic; no colour), stdin closed. `homes` and `real_clients` both drive it this way; the
/// caller adds `CLAUDE_CONFIG_DIR` when it wants one, and runs it.
pub fn offline_claude(bin: &Path, home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin);
    c.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", home)
        .env("LANG", "C.UTF-8")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_ERROR_REPORTING", "1")
        .env("NO_COLOR", "1")
        .current_dir(home)
        .stdin(std::process::Stdio::null())
        .args(args);
    c
}
