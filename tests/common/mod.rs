//! Shared infrastructure for the integration tests (`mod common;` in each test file).
//!
//! Everything here is deliberately independent of the crate's own code: the manifest that
//! decides "did anything change?" must not share bugs with the thing under test.
//!
//! Only std, `tempfile`, `blake3`, `serde_json` and `nix` are used.
//!
//! Isolation from the machine: every run of the binary in a `World` gets
//! `DCI_TEST_WORLD=<the world's token>` (`World::token`, its temp root's path), and the Claude
//! stand-ins of `agents::start_host`/`start_container` get the same entry in their environment.
//! In test builds (the `failpoints` feature) the binary's agent scan then looks only at
//! processes whose `/proc/PID/environ` holds exactly that entry, so other Claude Code processes
//! on the machine (a developer's agents, another test's containers) are never judged. Release
//! builds ignore the variable.
#![allow(dead_code)]

pub mod agents;
pub mod crash;
pub mod npm;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io::{ErrorKind, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

// Helpers in files of their own: add yours as `tests/common/<name>.rs`, declared here.
mod skip;
#[allow(unused_imports)]
pub use skip::*;
mod strace;
#[allow(unused_imports)]
pub use strace::*;
mod scaffold;
#[allow(unused_imports)]
pub use scaffold::*;
mod deb;
#[allow(unused_imports)]
pub use deb::*;
/// Agents holding session.lock and containers in mount namespaces, for the `--wait` tests.
pub mod wait;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_disinto-claude-init");

/// How long `run`/`run_json` wait for the binary before killing it and failing the test: a
/// guard against a hang, far above any run's time on a loaded machine, never a synchronisation.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(600);

// ---------------------------------------------------------------------------------------------
// Manifest
// ---------------------------------------------------------------------------------------------

/// What kind of file system object a manifest entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Other,
}

/// One lstat'ed entry of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    /// `st_mode & 0o7777`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// `st_size` for files and symlinks; 0 for directories (their size is a file system detail).
    pub size: u64,
    /// blake3 of the content, files only.
    pub hash: Option<blake3::Hash>,
    /// The raw link target, symlinks only.
    pub target: Option<Vec<u8>>,
    /// mtime (seconds, nanoseconds).
    pub mtime: (i64, i64),
    /// For files with nlink > 1: the smallest relative path in this manifest sharing the inode.
    pub link_group: Option<Vec<u8>>,
}

/// Relative path bytes (root is `b"."`) to node.
pub type Manifest = BTreeMap<Vec<u8>, Node>;

/// Escape a path's bytes for messages (`\n`, `\xff`, ...).
pub fn esc(p: &[u8]) -> String {
    p.escape_ascii().to_string()
}

/// A `Path` from raw bytes.
pub fn bpath(b: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(b))
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
            Kind::Fifo => "fifo",
            Kind::Other => "other",
        };
        write!(
            f,
            "{kind} {:04o} {}:{} size={} mtime={}.{:09}",
            self.mode, self.uid, self.gid, self.size, self.mtime.0, self.mtime.1
        )?;
        if let Some(h) = &self.hash {
            write!(f, " blake3={}", &h.to_hex()[..16])?;
        }
        if let Some(t) = &self.target {
            write!(f, " -> {}", esc(t))?;
        }
        if let Some(g) = &self.link_group {
            write!(f, " hardlink-group={}", esc(g))?;
        }
        Ok(())
    }
}

/// Manifest of the tree at `root`, lstat only (links are never followed, not even `root`).
/// A missing `root` gives an empty manifest.
pub fn manifest(root: &Path) -> Manifest {
    let mut out = Manifest::new();
    let meta = match fs::symlink_metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return out,
        Err(e) => panic!("manifest: lstat {}: {e}", root.display()),
    };
    let mut groups: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let mut linked: Vec<(Vec<u8>, (u64, u64))> = Vec::new();
    visit(
        root,
        b".".to_vec(),
        &meta,
        &mut out,
        &mut groups,
        &mut linked,
    );
    for (key, id) in linked {
        let group = groups[&id].clone();
        out.get_mut(&key).expect("linked key").link_group = Some(group);
    }
    out
}

fn visit(
    path: &Path,
    key: Vec<u8>,
    meta: &fs::Metadata,
    out: &mut Manifest,
    groups: &mut HashMap<(u64, u64), Vec<u8>>,
    linked: &mut Vec<(Vec<u8>, (u64, u64))>,
) {
    let ft = meta.file_type();
    let kind = if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        Kind::Other
    };
    let mut node = Node {
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        size: if kind == Kind::Dir { 0 } else { meta.size() },
        hash: None,
        target: None,
        mtime: (meta.mtime(), meta.mtime_nsec()),
        link_group: None,
    };
    match kind {
        Kind::File => {
            let mut hasher = blake3::Hasher::new();
            let mut f = fs::File::open(path)
                .unwrap_or_else(|e| panic!("manifest: open {}: {e}", path.display()));
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = f
                    .read(&mut buf)
                    .unwrap_or_else(|e| panic!("manifest: read {}: {e}", path.display()));
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            node.hash = Some(hasher.finalize());
            if meta.nlink() > 1 {
                let id = (meta.dev(), meta.ino());
                let g = groups.entry(id).or_insert_with(|| key.clone());
                if key < *g {
                    *g = key.clone();
                }
                linked.push((key.clone(), id));
            }
        }
        Kind::Symlink => {
            let t = fs::read_link(path)
                .unwrap_or_else(|e| panic!("manifest: readlink {}: {e}", path.display()));
            node.target = Some(t.as_os_str().as_bytes().to_vec());
        }
        _ => {}
    }
    out.insert(key.clone(), node);
    if kind == Kind::Dir {
        let mut names: Vec<_> = fs::read_dir(path)
            .unwrap_or_else(|e| panic!("manifest: read_dir {}: {e}", path.display()))
            .map(|e| e.expect("read_dir entry").file_name())
            .collect();
        names.sort();
        for name in names {
            let child = path.join(&name);
            let child_key = if key == b"." {
                name.as_bytes().to_vec()
            } else {
                [&key[..], b"/", name.as_bytes()].concat()
            };
            let m = fs::symlink_metadata(&child)
                .unwrap_or_else(|e| panic!("manifest: lstat {}: {e}", child.display()));
            visit(&child, child_key, &m, out, groups, linked);
        }
    }
}

/// What `diff` may overlook. `Ignore::default()` is strict: everything counts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ignore {
    /// Skip the root entry (`b"."`) entirely (e.g. `.claude` 0755 vs config dir 0700).
    pub root: bool,
    /// Ignore directory mtimes.
    pub dir_mtime: bool,
    /// Ignore uid/gid.
    pub owner: bool,
}

/// Human-readable differences between two manifests, one line per path, sorted by path.
pub fn diff(before: &Manifest, after: &Manifest, ignore: Ignore) -> Vec<String> {
    diff_by(before, after, |k, node| {
        (!(ignore.root && k == b".")).then_some(Overlook {
            owner: ignore.owner,
            content: false,
            mtime: ignore.dir_mtime && node.kind == Kind::Dir,
        })
    })
}

/// What one path's comparison may overlook (see [`diff_by`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Overlook {
    pub owner: bool,
    /// Size and bytes.
    pub content: bool,
    pub mtime: bool,
}

/// [`diff`] with a rule per path: `rule(key, node)` says what to overlook there, or None to
/// skip the path entirely (`node` is the one before, else the one after).
pub fn diff_by(
    before: &Manifest,
    after: &Manifest,
    rule: impl Fn(&[u8], &Node) -> Option<Overlook>,
) -> Vec<String> {
    let keys: BTreeSet<&Vec<u8>> = before.keys().chain(after.keys()).collect();
    let mut out = Vec::new();
    for k in keys {
        let Some(node) = before.get(k).or_else(|| after.get(k)) else {
            continue;
        };
        let Some(o) = rule(k, node) else { continue };
        let p = esc(k);
        match (before.get(k), after.get(k)) {
            (Some(b), None) => out.push(format!("removed {p}: {b}")),
            (None, Some(a)) => out.push(format!("added   {p}: {a}")),
            (Some(b), Some(a)) => {
                let what = node_changes(b, a, o);
                if !what.is_empty() {
                    out.push(format!("changed {p}: {}", what.join("; ")));
                }
            }
            (None, None) => unreachable!(),
        }
    }
    out
}

/// How `a` differs from `b`, one phrase per attribute, overlooking what `o` says.
fn node_changes(b: &Node, a: &Node, o: Overlook) -> Vec<String> {
    let mut what = Vec::new();
    if b.kind != a.kind {
        what.push(format!("was [{b}] now [{a}]"));
        return what;
    }
    if b.mode != a.mode {
        what.push(format!("mode {:04o} -> {:04o}", b.mode, a.mode));
    }
    if !o.owner && (b.uid, b.gid) != (a.uid, a.gid) {
        what.push(format!("owner {}:{} -> {}:{}", b.uid, b.gid, a.uid, a.gid));
    }
    if !o.content && b.size != a.size {
        what.push(format!("size {} -> {}", b.size, a.size));
    }
    if !o.content && b.hash != a.hash {
        let h =
            |x: &Option<blake3::Hash>| x.map(|h| h.to_hex()[..16].to_string()).unwrap_or_default();
        what.push(format!("content {} -> {}", h(&b.hash), h(&a.hash)));
    }
    if b.target != a.target {
        let t = |x: &Option<Vec<u8>>| x.as_deref().map(esc).unwrap_or_default();
        what.push(format!("target {} -> {}", t(&b.target), t(&a.target)));
    }
    if !o.mtime && b.mtime != a.mtime {
        what.push(format!(
            "mtime {}.{:09} -> {}.{:09}",
            b.mtime.0, b.mtime.1, a.mtime.0, a.mtime.1
        ));
    }
    if b.link_group != a.link_group {
        let g = |x: &Option<Vec<u8>>| x.as_deref().map(esc).unwrap_or_else(|| "none".into());
        what.push(format!(
            "hardlink-group {} -> {}",
            g(&b.link_group),
            g(&a.link_group)
        ));
    }
    what
}

fn report(diffs: &[String], what: &str) -> String {
    const SHOWN: usize = 30;
    let mut msg = format!("{what}: {} difference(s)", diffs.len());
    for d in diffs.iter().take(SHOWN) {
        msg.push_str("\n  ");
        msg.push_str(d);
    }
    if diffs.len() > SHOWN {
        msg.push_str(&format!("\n  ... and {} more", diffs.len() - SHOWN));
    }
    msg
}

/// Panic (listing the first 30 differences) unless the two manifests are identical.
#[track_caller]
pub fn assert_same(before: &Manifest, after: &Manifest, what: &str) {
    assert_same_except(before, after, Ignore::default(), what);
}

/// Like `assert_same`, overlooking what `ignore` says.
#[track_caller]
pub fn assert_same_except(before: &Manifest, after: &Manifest, ignore: Ignore, what: &str) {
    let d = diff(before, after, ignore);
    if !d.is_empty() {
        panic!("{}", report(&d, what));
    }
}

/// Manifest of everything a world owns (home, shared dir, env file dir, ...): every tempdir
/// root of the world, keys prefixed with the root's label (`tmp/...`, and `shm/...` for
/// cross-device worlds). For "nothing changed at all" assertions.
pub fn world_manifest(w: &World) -> Manifest {
    let mut out = Manifest::new();
    for (label, root) in &w.roots {
        let prefix = |k: &[u8]| {
            if k == b"." {
                label.as_bytes().to_vec()
            } else {
                [label.as_bytes(), b"/", k].concat()
            }
        };
        for (k, mut n) in manifest(root) {
            n.link_group = n.link_group.as_deref().map(prefix);
            out.insert(prefix(&k), n);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Small file system helpers
// ---------------------------------------------------------------------------------------------

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// chmod (follows links: never call it on a symlink).
pub fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {:o} {}: {e}", mode, path.display()));
}

/// lstat mode & 0o7777.
pub fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()))
        .mode()
        & 0o7777
}

/// Set atime and mtime of `path` itself (never follows a symlink).
pub fn set_mtime(path: &Path, secs: i64, nsecs: i64) {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let ts = TimeSpec::new(secs, nsecs);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &ts,
        &ts,
        UtimensatFlags::NoFollowSymlink,
    )
    .unwrap_or_else(|e| panic!("utimensat {}: {e}", path.display()));
}

/// lstat mtime (seconds, nanoseconds).
pub fn mtime_of(path: &Path) -> (i64, i64) {
    let m = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
    (m.mtime(), m.mtime_nsec())
}

/// mkdir -p, then chmod the last component.
pub fn mkdir(path: &Path, mode: u32) {
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
    set_mode(path, mode);
}

/// Write a file (parents created 0755), then chmod it.
pub fn write_file(path: &Path, contents: &[u8], mode: u32) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
    }
    fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    set_mode(path, mode);
}

/// `ln -s target link` (parents created).
pub fn ln_s(target: impl AsRef<Path>, link: &Path) {
    if let Some(parent) = link.parent() {
        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
    }
    symlink(target.as_ref(), link).unwrap_or_else(|e| {
        panic!(
            "ln -s {} {}: {e}",
            target.as_ref().display(),
            link.display()
        )
    });
}

/// Raw bytes of a symlink's target.
pub fn link_target(path: &Path) -> Vec<u8> {
    fs::read_link(path)
        .unwrap_or_else(|e| panic!("readlink {}: {e}", path.display()))
        .as_os_str()
        .as_bytes()
        .to_vec()
}

/// Give every entry under `path` (post-order, so each directory after its children, `path`
/// itself last) a distinct mtime with a non-zero sub-microsecond part. `counter` carries
/// across calls so several trees stay distinct.
pub fn stamp_tree(path: &Path, counter: &mut i64) {
    let m = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
    if m.is_dir() {
        let mut names: Vec<_> = fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            stamp_tree(&path.join(n), counter);
        }
    }
    *counter += 1;
    let c = *counter;
    // Last three digits always 123: a copy that truncates to microseconds is caught.
    let nsecs = (c * 7_654_321 % 999_999) * 1000 + 123;
    set_mtime(path, 1_600_000_000 + c * 3607, nsecs);
}

// ---------------------------------------------------------------------------------------------
// World
// ---------------------------------------------------------------------------------------------

/// A throw-away machine: a home, a (not yet existing) shared dir, a factory dir for the env file.
/// Set `DCI_KEEP_WORLD=1` to keep the tempdirs after the test (their paths go to stderr).
pub struct World {
    /// The tempdir holding the home (and, for `new()`, everything else).
    pub root: PathBuf,
    /// `<root>/home/user`, created 0755.
    pub home: PathBuf,
    /// `CLAUDE_SHARED_DIR`; NOT created (its parent is).
    pub shared: PathBuf,
    /// `<shared>/config`; NOT created.
    pub config: PathBuf,
    /// `<root>/factory/.env`; its directory is created, the file is not (see `write_env_file`).
    pub env_file: PathBuf,
    /// `<home>/.bashrc`; not created (see `write_bashrc`).
    pub profile: PathBuf,
    /// Every tempdir root of the world, with a label for `world_manifest`.
    pub roots: Vec<(&'static str, PathBuf)>,
    tmp: Vec<TempDir>,
}

/// A tempdir `<dir>/<prefix>XXXXXX`, canonical and mode 0755 (traversable by a home's owner);
/// kept after the test with `DCI_KEEP_WORLD=1`.
pub fn tempdir_in(dir: &str, prefix: &str) -> std::io::Result<(TempDir, PathBuf)> {
    let mut t = tempfile::Builder::new().prefix(prefix).tempdir_in(dir)?;
    if std::env::var_os("DCI_KEEP_WORLD").is_some() {
        t.disable_cleanup(true);
        eprintln!("DCI_KEEP_WORLD: keeping {}", t.path().display());
    }
    let p = fs::canonicalize(t.path())?;
    // TempDir makes 0700; a world must be traversable by a non-root home owner.
    set_mode(&p, 0o755);
    Ok((t, p))
}

impl World {
    /// Everything under one tempdir in /tmp:
    /// `<root>/home/user`, `<root>/var/lib/disinto/claude-shared`, `<root>/factory/.env`.
    pub fn new() -> World {
        let (t, root) = tempdir_in("/tmp", "dci-world.").expect("tempdir in /tmp");
        let home = root.join("home/user");
        mkdir(&root.join("home"), 0o755);
        mkdir(&home, 0o755);
        mkdir(&root.join("var/lib/disinto"), 0o755);
        mkdir(&root.join("factory"), 0o755);
        let shared = root.join("var/lib/disinto/claude-shared");
        World::laid_out(&root, shared, vec![("tmp", root.clone())], vec![t])
    }

    /// The paths every world shares, from its root (home `home/user`, env file
    /// `factory/.env`, rc file `~/.bashrc`) and its shared dir (config dir `<shared>/config`).
    /// Creates nothing.
    pub fn laid_out(
        root: &Path,
        shared: PathBuf,
        roots: Vec<(&'static str, PathBuf)>,
        tmp: Vec<TempDir>,
    ) -> World {
        let home = root.join("home/user");
        World {
            config: shared.join("config"),
            shared,
            env_file: root.join("factory/.env"),
            profile: home.join(".bashrc"),
            home,
            roots,
            root: root.to_path_buf(),
            tmp,
        }
    }

    /// Home (and env file) in a tempdir under /tmp, shared dir in a tempdir under /dev/shm.
    /// None (with the reason on stderr) when that does not give two file systems.
    pub fn cross_device() -> Option<World> {
        let skip = |why: String| {
            skipped(&format!("no cross-device world: {why}"));
            None
        };
        match fs::metadata("/dev/shm") {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return skip("/dev/shm is not a directory".into()),
            Err(e) => return skip(format!("/dev/shm: {e}")),
        }
        let (t1, root) = match tempdir_in("/tmp", "dci-world.") {
            Ok(x) => x,
            Err(e) => return skip(format!("tempdir in /tmp: {e}")),
        };
        let (t2, shm) = match tempdir_in("/dev/shm", "dci-shared.") {
            Ok(x) => x,
            Err(e) => return skip(format!("tempdir in /dev/shm: {e}")),
        };
        let dev = |p: &Path| fs::metadata(p).map(|m| m.dev()).unwrap_or(0);
        if dev(&root) == dev(&shm) {
            return skip("/tmp and /dev/shm are the same file system".into());
        }
        let home = root.join("home/user");
        mkdir(&root.join("home"), 0o755);
        mkdir(&home, 0o755);
        mkdir(&root.join("factory"), 0o755);
        let shared = shm.join("claude-shared");
        Some(World::laid_out(
            &root,
            shared,
            vec![("tmp", root.clone()), ("shm", shm)],
            vec![t1, t2],
        ))
    }

    /// `World::new()` with `build_realistic_home`, `write_env_file` and `write_bashrc` done.
    pub fn realistic() -> World {
        let w = World::new();
        build_realistic_home(&w.home);
        write_env_file(&w.env_file);
        write_bashrc(&w.profile);
        w
    }

    /// `~/.claude`.
    pub fn claude(&self) -> PathBuf {
        self.home.join(".claude")
    }

    /// `~/.claude.json`.
    pub fn claude_json(&self) -> PathBuf {
        self.home.join(".claude.json")
    }

    /// This world's `DCI_TEST_WORLD` token (its temp root's path): unique among live worlds.
    pub fn token(&self) -> &OsStr {
        self.root.as_os_str()
    }

    /// The binary with a cleared environment (only PATH, HOME=<home>, LANG=C.UTF-8 and
    /// DCI_TEST_WORLD=<token>), stdin null, no arguments.
    pub fn cmd_bare(&self) -> Command {
        let mut c = Command::new(BIN);
        self.bare_env(&mut c);
        c
    }

    /// `cmd_bare`'s environment and stdin on any command (a wrapper such as strace passes
    /// the environment on to the binary).
    pub fn bare_env(&self, c: &mut Command) {
        c.env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .env("HOME", &self.home)
            .env("LANG", "C.UTF-8")
            .env("DCI_TEST_WORLD", self.token())
            .stdin(Stdio::null());
    }

    /// The world's four path options as arguments.
    pub fn path_args(&self) -> Vec<std::ffi::OsString> {
        vec![
            "--home".into(),
            self.home.clone().into(),
            "--shared-dir".into(),
            self.shared.clone().into(),
            "--env-file".into(),
            self.env_file.clone().into(),
            "--profile".into(),
            self.profile.clone().into(),
        ]
    }

    /// `cmd_bare()` plus `--home <home> --shared-dir <shared> --env-file <env> --profile <rc>`
    /// (options first: append the subcommand and further flags after them).
    pub fn cmd(&self) -> Command {
        let mut c = self.cmd_bare();
        c.args(self.path_args());
        c
    }

    /// `cmd_bare()` plus `<sub>` then the four path options (subcommand first).
    pub fn cmd_sub(&self, sub: &str) -> Command {
        let mut c = self.cmd_bare();
        c.arg(sub).args(self.path_args());
        c
    }

    /// `world_manifest(self)`.
    pub fn manifest(&self) -> Manifest {
        world_manifest(self)
    }
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

// ---------------------------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------------------------

/// The outcome of one run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// A child whose stdout and stderr two threads read to the end (neither pipe can fill up and
/// block it).
pub struct Collecting {
    pub child: std::process::Child,
    out: std::thread::JoinHandle<Vec<u8>>,
    err: std::thread::JoinHandle<Vec<u8>>,
}

impl Collecting {
    /// Spawn `cmd` with stdout and stderr piped.
    pub fn spawn(cmd: &mut Command) -> Collecting {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
        let reader = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = r.read_to_end(&mut v);
                v
            })
        };
        let out = reader(Box::new(child.stdout.take().unwrap()));
        let err = reader(Box::new(child.stderr.take().unwrap()));
        Collecting { child, out, err }
    }

    /// What the child wrote (lossy UTF-8), once both pipes are closed: (stdout, stderr).
    pub fn output(self) -> (String, String) {
        let text = |h: std::thread::JoinHandle<Vec<u8>>| {
            String::from_utf8_lossy(&h.join().unwrap()).into_owned()
        };
        (text(self.out), text(self.err))
    }
}

/// Run to completion (killed and panicking after `RUN_TIMEOUT`); panics if killed by a signal.
pub fn run(cmd: &mut Command) -> Run {
    let mut c = Collecting::spawn(cmd);
    let child = &mut c.child;
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            let (_, stderr) = c.output();
            panic!("{cmd:?} timed out after {RUN_TIMEOUT:?}; stderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let (stdout, stderr) = c.output();
    let code = match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, sig) => {
            panic!("{cmd:?} killed by signal {sig:?}\nstdout:\n{stdout}\nstderr:\n{stderr}")
        }
    };
    Run {
        code,
        stdout,
        stderr,
    }
}

/// Run (the caller adds `--json`) and parse stdout as one JSON document; panics with the
/// whole output when it is not one.
pub fn run_json(cmd: &mut Command) -> (i32, serde_json::Value) {
    let r = run(cmd);
    match serde_json::from_str(&r.stdout) {
        Ok(v) => (r.code, v),
        Err(e) => panic!(
            "{cmd:?}: exit {} and stdout is not one JSON document ({e})\nstdout:\n{}\nstderr:\n{}",
            r.code, r.stdout, r.stderr
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// tmpfs
// ---------------------------------------------------------------------------------------------

/// A mounted tmpfs; unmounted (then its directory removed) on drop.
pub struct TmpfsMount {
    pub path: PathBuf,
    _dir: TempDir,
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("umount {} failed; trying lazy umount", self.path.display());
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Mount a tmpfs of `size` (e.g. "1M", "64k") on a fresh tempdir under /tmp. Root only:
/// None, with the reason on stderr, when not root or when the mount fails.
pub fn mount_tmpfs(size: &str) -> Option<TmpfsMount> {
    if !is_root() {
        skipped("mount_tmpfs needs root");
        return None;
    }
    let dir = match tempfile::Builder::new()
        .prefix("dci-tmpfs.")
        .tempdir_in("/tmp")
    {
        Ok(d) => d,
        Err(e) => {
            skipped(&format!("mount_tmpfs: tempdir: {e}"));
            return None;
        }
    };
    let path = fs::canonicalize(dir.path()).expect("canonicalize tmpfs dir");
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o"])
        .arg(format!("size={size},mode=0755"))
        .arg("none")
        .arg(&path)
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => Some(TmpfsMount { path, _dir: dir }),
        Ok(o) => {
            skipped(&format!(
                "mount -t tmpfs failed ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ));
            None
        }
        Err(e) => {
            skipped(&format!("cannot run mount: {e}"));
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------------------------

/// Paths (relative to the home) of the awkward entries `build_realistic_home` makes.
pub const NEWLINE_NAME: &[u8] = b".claude/projects/-home-user-src-app/line\nbreak.jsonl";
pub const NON_UTF8_NAME: &[u8] = b".claude/projects/-home-user-src-app/bad\xff.jsonl";
pub const SPACES_NAME: &[u8] = b".claude/projects/-home-user-src-my app/notes with spaces.md";
pub const HARDLINK_A: &[u8] = b".claude/backups/settings.json.hardlink";
pub const HARDLINK_B: &[u8] = b".claude/statsig/settings.json.hardlink";
pub const DANGLING_LINK: &[u8] = b".claude/todos/latest.json";
pub const EMPTY_FILE: &[u8] = b".claude/session.lock";
pub const RELATIVE_LINK: &[u8] = b".claude/local/node_modules/.bin/claude";
pub const BIG_TRANSCRIPT: &[u8] =
    b".claude/projects/-home-user-src-app/3f2b8c1e-8d4a-4b7e-9a61-2c5d7e9f0a13.jsonl";

/// A fake transcript of at least `min_bytes`, deterministic.
pub fn transcript(session: &str, min_bytes: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(min_bytes + 512);
    let mut i = 0u64;
    loop {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        v.extend_from_slice(
            format!(
                "{{\"type\":\"{role}\",\"sessionId\":\"{session}\",\"uuid\":\"{i:08x}-0000-4000-8000-{i:012x}\",\
                 \"timestamp\":\"2025-0{}-1{}T12:00:{:02}.{:03}Z\",\"message\":{{\"role\":\"{role}\",\
                 \"content\":\"line {i}: the quick brown fox jumps over the lazy dog \\u00e9\\u4e2d\"}}}}\n",
                1 + i % 9,
                i % 10,
                i % 60,
                i % 1000
            )
            .as_bytes(),
        );
        i += 1;
        if v.len() >= min_bytes {
            return v;
        }
    }
}

/// A home as Claude Code leaves it (docs/contract.md, "Claude Code's files"), plus every awkward case: see the consts above.
/// Every entry under `.claude`, `dotfiles` and `~/.claude.json` gets a distinct mtime with
/// nanoseconds (directories after their contents, `.claude` itself last). `.claude` is 0755.
pub fn build_realistic_home(home: &Path) {
    mkdir(home, 0o755);
    let c = home.join(".claude");
    let dot = home.join("dotfiles");
    mkdir(&c, 0o755);

    // Dotfiles repo the user links into.
    write_file(
        &dot.join("CLAUDE.md"),
        b"# Global instructions\n\nPrefer small commits. Run the tests.\n",
        0o644,
    );
    write_file(
        &dot.join("commands/review.md"),
        b"Review the staged diff for bugs.\n",
        0o644,
    );
    write_file(
        &dot.join("commands/ship.md"),
        b"Run the tests, then open a PR.\n",
        0o644,
    );
    ln_s(dot.join("CLAUDE.md"), &c.join("CLAUDE.md"));
    ln_s(dot.join("commands"), &c.join("commands"));

    write_file(
        &c.join(".credentials.json"),
        br#"{"claudeAiOauth":{"accessToken":"sk-ant-oat01-FAKE-test-access-token-0000000000","refreshToken":"sk-ant-ort01-FAKE-test-refresh-token-0000000000","expiresAt":4102444800000,"scopes":["user:inference","user:profile"],"subscriptionType":"max"}}"#,
        0o600,
    );
    write_file(
        &c.join("settings.json"),
        b"{\n  \"model\": \"opus\",\n  \"permissions\": {\"allow\": [\"Bash(cargo test:*)\"]},\n  \"env\": {\"DISABLE_TELEMETRY\": \"1\"}\n}\n",
        0o644,
    );
    write_file(
        &c.join("settings.local.json"),
        b"{\"permissions\":{\"allow\":[\"Bash(git status)\"],\"deny\":[]}}\n",
        0o644,
    );
    write_file(&home.join(bpath(EMPTY_FILE)), b"", 0o644);

    // Transcripts: varied sizes, one ~1 MiB.
    let app = c.join("projects/-home-user-src-app");
    write_file(
        &home.join(bpath(BIG_TRANSCRIPT)),
        &transcript("3f2b8c1e-8d4a-4b7e-9a61-2c5d7e9f0a13", 1 << 20),
        0o644,
    );
    write_file(
        &app.join("0b7e2a44-51c3-4f0e-8d2b-6a9c1e3f5d70.jsonl"),
        &transcript("0b7e2a44-51c3-4f0e-8d2b-6a9c1e3f5d70", 64 * 1024),
        0o644,
    );
    write_file(
        &app.join("a1c9e5f2-7b3d-4e8a-b6f0-1d2c3b4a5e6f.jsonl"),
        &transcript("a1c9e5f2-7b3d-4e8a-b6f0-1d2c3b4a5e6f", 300),
        0o644,
    );
    write_file(
        &home.join(bpath(NEWLINE_NAME)),
        &transcript("nl", 200),
        0o644,
    );
    write_file(
        &home.join(bpath(NON_UTF8_NAME)),
        &transcript("ff", 200),
        0o644,
    );
    write_file(
        &home.join(bpath(SPACES_NAME)),
        b"notes in a project dir whose name has a space\n",
        0o644,
    );

    write_file(
        &c.join("history.jsonl"),
        b"{\"display\":\"fix the build\",\"pastedContents\":{},\"timestamp\":1735689600000,\"project\":\"/home/user/src/app\"}\n\
          {\"display\":\"run tests | grep FAIL & echo done\",\"pastedContents\":{},\"timestamp\":1735689700000,\"project\":\"/home/user/src/app\"}\n",
        0o644,
    );
    write_file(
        &c.join("todos/0b7e2a44-51c3-4f0e-8d2b-6a9c1e3f5d70-agent-0b7e2a44-51c3-4f0e-8d2b-6a9c1e3f5d70.json"),
        b"[{\"content\":\"write tests\",\"status\":\"in_progress\",\"id\":\"1\"}]\n",
        0o644,
    );
    write_file(&c.join("todos/empty.json"), b"", 0o644);
    ln_s("0b7e2a44-gone.json", &home.join(bpath(DANGLING_LINK)));
    write_file(
        &c.join("statsig/statsig.stable_id.2656274335"),
        b"\"5c2f0b8e-8a1d-4d6e-9c3b-7f1e2d3c4b5a\"",
        0o644,
    );
    write_file(
        &c.join("shell-snapshots/snapshot-bash-1735689600000-abc123.sh"),
        b"# Snapshot file\nunalias -a 2>/dev/null || true\nexport PATH=/usr/local/bin:/usr/bin:/bin\n",
        0o644,
    );
    mkdir(&c.join("ide"), 0o755); // empty directory
    write_file(
        &c.join("plugins/config.json"),
        b"{\"repositories\":{}}\n",
        0o644,
    );
    write_file(
        &c.join("agents/reviewer.md"),
        b"---\nname: reviewer\ndescription: reviews diffs\n---\nYou review code.\n",
        0o644,
    );
    write_file(
        &c.join("backups/.claude.json.backup.1735689600000"),
        b"{\"numStartups\":41}\n",
        0o600,
    );
    write_file(
        &home.join(bpath(HARDLINK_A)),
        b"{\"model\":\"sonnet\"}\n",
        0o644,
    );
    fs::hard_link(home.join(bpath(HARDLINK_A)), home.join(bpath(HARDLINK_B))).expect("hard link");

    // A local Node install with a relative link into node_modules.
    let local = c.join("local");
    write_file(
        &local.join("package.json"),
        b"{\"name\":\"claude-local\",\"dependencies\":{\"@anthropic-ai/claude-code\":\"^1.0.0\"}}\n",
        0o644,
    );
    write_file(
        &local.join("claude"),
        b"#!/bin/bash\nexec \"$HOME/.claude/local/node_modules/.bin/claude\" \"$@\"\n",
        0o755,
    );
    write_file(
        &local.join("node_modules/@anthropic-ai/claude-code/cli.js"),
        b"#!/usr/bin/env node\nconsole.log('fake claude');\n",
        0o755,
    );
    write_file(
        &local.join("node_modules/@anthropic-ai/claude-code/package.json"),
        b"{\"name\":\"@anthropic-ai/claude-code\",\"version\":\"1.0.0\",\"bin\":{\"claude\":\"cli.js\"}}\n",
        0o644,
    );
    ln_s(
        "../@anthropic-ai/claude-code/cli.js",
        &home.join(bpath(RELATIVE_LINK)),
    );

    write_file(
        &home.join(".claude.json"),
        br#"{"numStartups":42,"installMethod":"local","autoUpdates":false,"hasCompletedOnboarding":true,"userID":"0000fake0000","oauthAccount":{"accountUuid":"00000000-0000-4000-8000-000000000000","emailAddress":"user@example.test"},"mcpServers":{},"projects":{"/home/user/src/app":{"allowedTools":[],"history":[],"hasTrustDialogAccepted":true}}}"#,
        0o600,
    );

    let mut n = 0;
    stamp_tree(&dot, &mut n);
    stamp_tree(&home.join(".claude.json"), &mut n);
    stamp_tree(&c, &mut n);
}

/// `n` small files under `dir` (created if needed), 500 per subdirectory, deterministic
/// names and contents of varied sizes.
pub fn build_many_files(dir: &Path, n: usize) {
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    let mut made = BTreeSet::new();
    for i in 0..n {
        let sub = dir.join(format!("d{:04}", i / 500));
        if made.insert(i / 500) {
            fs::create_dir_all(&sub).unwrap();
        }
        let body = format!("{{\"n\":{i},\"pad\":\"{}\"}}\n", "x".repeat(i % 97));
        fs::write(
            sub.join(format!("{i:08x}-4e1a-4c2b-9d3e-{:012x}.jsonl", i * 7919)),
            body,
        )
        .unwrap();
    }
}

/// The exact bytes `write_env_file` writes.
pub const ENV_FILE_CONTENT: &str = "\
# disinto factory environment -- generated by disinto init
# Holds secrets: keep mode 0600.

FACTORY_ROOT=/opt/disinto/factory
FORGE_URL=https://forge.example.test
export FORGE_TOKEN=\"abc|def&ghi\"
FACTORY_DISPLAY_NAME=\"Dev box factory (west)\"
WOODPECKER_AGENT_SECRET='s3cr&t|with $dollar'

# Claude Code
CLAUDE_CONFIG_DIR=/home/user/.claude
AGENT_UID=1000
";

/// A realistic factory `.env` (mode 0600; comments, blanks, `export`, `|`/`&` in values,
/// spaces in a quoted value, a stale `CLAUDE_CONFIG_DIR=/home/user/.claude`, no CRLF).
/// Parent directories are created.
pub fn write_env_file(path: &Path) {
    write_file(path, ENV_FILE_CONTENT.as_bytes(), 0o600);
}

/// The exact bytes `write_bashrc` writes (Debian-like; note the early `return` for
/// non-interactive shells).
pub const BASHRC_CONTENT: &str = "\
# ~/.bashrc: executed by bash(1) for non-login shells.

# If not running interactively, don't do anything
case $- in
    *i*) ;;
      *) return;;
esac

HISTCONTROL=ignoreboth
shopt -s histappend
export PATH=\"$HOME/.local/bin:$PATH\"
alias ll='ls -alF'
if [ -f ~/.bash_aliases ]; then
    . ~/.bash_aliases
fi
";

/// A user's `.bashrc` (mode 0644).
pub fn write_bashrc(path: &Path) {
    write_file(path, BASHRC_CONTENT.as_bytes(), 0o644);
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// Every layout under `fixtures/homes/`.
pub const FIXTURES: &[&str] = &[
    "fresh",
    "legacy",
    "migrated",
    "adopt",
    "conflict",
    "foreign-symlink",
    "dangling-symlink",
    "not-a-directory",
];

/// `<crate>/fixtures/homes/<name>`.
pub fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/homes")
        .join(name)
}

/// Copy a checked-in tree: directories 0755, files 0644 (0755 if executable in the source),
/// symlinks recreated as they are.
pub fn copy_tree(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap_or_else(|e| panic!("mkdir {}: {e}", dst.display()));
    set_mode(dst, 0o755);
    let mut entries: Vec<_> = fs::read_dir(src)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", src.display()))
        .map(|e| e.unwrap())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let s = e.path();
        let d = dst.join(e.file_name());
        let m = fs::symlink_metadata(&s).unwrap();
        if m.file_type().is_symlink() {
            ln_s(fs::read_link(&s).unwrap(), &d);
        } else if m.is_dir() {
            copy_tree(&s, &d);
        } else {
            fs::copy(&s, &d).unwrap_or_else(|e| panic!("copy {}: {e}", s.display()));
            set_mode(&d, if m.mode() & 0o111 != 0 { 0o755 } else { 0o644 });
        }
    }
}

fn chmod_if_exists(path: &Path, mode: u32) {
    if fs::symlink_metadata(path).is_ok_and(|m| !m.file_type().is_symlink()) {
        set_mode(path, mode);
    }
}

/// A fresh `World::new()` holding the checked-in layout `name` (see fixtures/homes/README.md):
/// `home/` copied to the world's home, `shared/` (if any) to its shared dir, then what git
/// cannot store is created: symlinks to the world's real absolute paths, modes, empty dirs.
/// No env file and no rc file beyond the fixture's own `home/.bashrc`.
pub fn load_fixture(name: &str) -> World {
    let src = fixture_dir(name);
    assert!(
        src.join("home").is_dir(),
        "no fixture {name} at {}",
        src.display()
    );
    let w = World::new();
    copy_tree(&src.join("home"), &w.home);
    if src.join("shared").is_dir() {
        copy_tree(&src.join("shared"), &w.shared);
    }
    let claude = w.claude();
    let claude_json = w.claude_json();

    // Modes git does not keep.
    chmod_if_exists(&claude_json, 0o600);
    chmod_if_exists(&claude.join(".credentials.json"), 0o600);
    chmod_if_exists(&w.config, 0o700);
    chmod_if_exists(&w.config.join(".credentials.json"), 0o600);
    chmod_if_exists(&w.config.join(".claude.json"), 0o600);

    match name {
        "fresh" => {}
        "legacy" => {
            set_mode(&claude, 0o700);
            mkdir(&claude.join("ide"), 0o755);
            mkdir(&claude.join("shell-snapshots"), 0o755);
            ln_s(
                "../@anthropic-ai/claude-code/cli.js",
                &claude.join("local/node_modules/.bin/claude"),
            );
        }
        "migrated" => {
            mkdir(&w.config.join("ide"), 0o755);
            ln_s(&w.config, &claude);
            ln_s(w.config.join(".claude.json"), &claude_json);
        }
        "adopt" => {
            mkdir(&claude, 0o700);
        }
        "conflict" => {
            set_mode(&claude, 0o700);
        }
        "foreign-symlink" => {
            let other = w.home.join("dotfiles/claude");
            set_mode(&other, 0o700);
            chmod_if_exists(&other.join(".credentials.json"), 0o600);
            ln_s(&other, &claude);
        }
        "dangling-symlink" => {
            ln_s(w.home.join("old-disk/claude"), &claude);
        }
        "not-a-directory" => {}
        other => panic!("load_fixture: unknown layout {other}"),
    }
    w
}
pub mod homes;

/// The adversarial harness of issue 10 (tests/security.rs).
pub mod attacker;
