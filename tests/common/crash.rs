//! Crash-point machinery (issue 12): worlds at fixed paths, strace traces of the real binary,
//! and SIGKILL injected at exactly the k-th mutating system call.
//!
//! How a call is reached exactly: strace's `-e inject=SYSCALL:signal=SIGKILL:when=N` counts the
//! calls of SYSCALL per thread, and `-P PATH` restricts the count to the calls that touch PATH
//! (a path argument spelled exactly PATH, or a descriptor argument open on PATH; for `rename`
//! only the old name, for `symlink` only the link name). From a trace of a clean run we pick,
//! for each mutating call, a PATH and the N that make it the N-th matching call of its thread,
//! preferring a PATH that no other thread touches with that syscall. The kill run's own strace
//! output then proves which call was hit: the expected call must be the one left without a
//! result (`= ?`) before `+++ killed by SIGKILL +++`. A point whose kill cannot be proved is a
//! failure of the harness, reported as such, never skipped.
//!
//! Every run of the binary happens in a fresh PID namespace (`unshare --pid --fork
//! --mount-proc`), so the pid in the names of the tool's temp files (`.journal.json.dci-tmp-<pid>`,
//! `..claude.symlink-<pid>-<n>`, `config.dci-probe-<pid>`, ...) is the same in every run: the
//! paths of the trace and of the kill run agree. Traced and killed runs take their pids from
//! 10000 on (`ns_last_pid`), recovery runs from 1: a recovery run then sees the killed run's pid
//! as dead, as it would be on a real machine once the process is gone, never as one of its own
//! threads.
//!
//! Only std, `nix` and the helpers of `common` are used.

use super::*;
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;

/// Every system call the trace records. The kill points are the mutating calls among them (see
/// [`is_mutating`]); the others are traced because `-P` counts them too (an `openat` that only
/// reads a path counts towards `when=N` for that path) and because the durability test needs
/// the fsyncs.
pub const TRACED: &[&str] = &[
    "open",
    "openat",
    "creat",
    "mkdir",
    "mkdirat",
    "rename",
    "renameat",
    "renameat2",
    "symlink",
    "symlinkat",
    "link",
    "linkat",
    "unlink",
    "unlinkat",
    "rmdir",
    "chmod",
    "fchmod",
    "fchmodat",
    "chown",
    "fchown",
    "lchown",
    "fchownat",
    "utimensat",
    "utimes",
    "futimesat",
    "truncate",
    "ftruncate",
    "fallocate",
    "write",
    "pwrite64",
    "copy_file_range",
    "sendfile",
    "setxattr",
    "lsetxattr",
    "fsetxattr",
    "removexattr",
    "lremovexattr",
    "fremovexattr",
    "fsync",
    "fdatasync",
    "syncfs",
    "sync",
];

/// Whether this machine can run the crash tests: root (PID and mount namespaces) and strace.
/// When not, the skip is recorded the project's way (`common::skipped`: it fails under
/// `CI=true`, where `.ci/run` installs strace and runs as root).
pub fn crash_tests_can_run() -> bool {
    if !is_root() {
        skipped("needs root (PID and mount namespaces)");
        return false;
    }
    if !have_strace() {
        skipped("needs strace (apt-get install -y strace)");
        return false;
    }
    true
}

// ---------------------------------------------------------------------------------------------
// Worlds at fixed paths
// ---------------------------------------------------------------------------------------------

/// A place where the same world is rebuilt, byte for byte and mtime for mtime, at the same
/// absolute paths, as often as needed: the trace of one run then names exactly the paths of
/// the next. Removed on drop (unless `DCI_KEEP_WORLD` is set).
pub struct Slot {
    pub tmp_root: PathBuf,
    pub shm_root: Option<PathBuf>,
    /// Whether the shared dir's parent (`var/lib/disinto`) exists in a same-filesystem world;
    /// when it does not, `create-shared-dir` makes two directories.
    pub with_var_lib: bool,
    snapshots: std::sync::Mutex<BTreeSet<String>>,
}

impl Slot {
    /// `/tmp/dci-crash-<tag>-<pid>-<n>` (and `/dev/shm/...` when `cross`). Panics when a cross
    /// slot would not span two file systems.
    pub fn new(tag: &str, n: usize, cross: bool) -> Slot {
        let name = format!("dci-crash-{tag}-{}-{n}", std::process::id());
        let tmp_root = Path::new("/tmp").join(&name);
        let shm_root = cross.then(|| Path::new("/dev/shm").join(&name));
        let s = Slot {
            tmp_root,
            shm_root,
            with_var_lib: true,
            snapshots: Default::default(),
        };
        s.wipe();
        if let Some(shm) = &s.shm_root {
            mkdir(&s.tmp_root, 0o755);
            mkdir(shm, 0o755);
            let dev = |p: &Path| fs::metadata(p).map(|m| m.dev()).unwrap();
            assert_ne!(
                dev(&s.tmp_root),
                dev(shm),
                "/tmp and /dev/shm are one file system here: no cross-device world"
            );
            s.wipe();
        }
        s
    }

    fn wipe(&self) {
        for r in std::iter::once(&self.tmp_root).chain(self.shm_root.iter()) {
            match fs::remove_dir_all(r) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => panic!("rm -r {}: {e}", r.display()),
            }
        }
    }

    /// Wipe the slot and build the realistic world in it (home, env file, rc file), with every
    /// entry's mtime set to a fixed value: two calls give identical manifests.
    pub fn world(&self) -> World {
        self.wipe();
        let w = self.current();
        mkdir(&w.root, 0o755);
        mkdir(&w.home, 0o755);
        mkdir(&w.root.join("factory"), 0o755);
        match &self.shm_root {
            None if self.with_var_lib => mkdir(&w.root.join("var/lib/disinto"), 0o755),
            None => mkdir(&w.root.join("var/lib"), 0o755),
            Some(shm) => mkdir(shm, 0o755),
        }
        build_realistic_home(&w.home);
        // The realistic home's 1 MiB transcript, cut to 64 KiB: every crash point hashes the
        // world several times, and the size of one file adds no crash point.
        let big = w.home.join(bpath(BIG_TRANSCRIPT));
        let t = mtime_of(&big);
        fs::write(
            &big,
            transcript("3f2b8c1e-8d4a-4b7e-9a61-2c5d7e9f0a13", 64 << 10),
        )
        .unwrap();
        set_mtime(&big, t.0, t.1);
        write_env_file(&w.env_file);
        write_bashrc(&w.profile);
        // What build_realistic_home does not stamp, children before parents.
        let mut rest = vec![
            w.profile.clone(),
            w.env_file.clone(),
            w.home.clone(),
            w.root.join("home"),
            w.root.join("factory"),
            w.root.join("var/lib/disinto"),
            w.root.join("var/lib"),
            w.root.join("var"),
        ];
        rest.extend(self.shm_root.iter().cloned());
        rest.push(w.root.clone());
        for (i, p) in rest.iter().enumerate() {
            if fs::symlink_metadata(p).is_ok() {
                set_mtime(p, 1_650_000_000 + i as i64 * 86_413, 987_654_321);
            }
        }
        w
    }
}

impl Slot {
    fn roots(&self) -> Vec<&PathBuf> {
        std::iter::once(&self.tmp_root)
            .chain(self.shm_root.iter())
            .collect()
    }

    fn snap_of(r: &Path, tag: &str) -> PathBuf {
        r.with_extension(format!("snap-{tag}"))
    }

    /// Keep a copy of the slot's world as it is now under the name `tag` (`cp -a`: modes,
    /// owners, mtimes, symlinks, hard links), for [`Slot::restore`].
    pub fn snapshot(&self, tag: &str) {
        self.snapshots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tag.to_string());
        for r in self.roots() {
            let snap = Self::snap_of(r, tag);
            let _ = fs::remove_dir_all(&snap);
            cp_a(r, &snap);
        }
    }

    /// Put the world back as [`Slot::snapshot`] saw it under `tag`, at the same paths.
    pub fn restore(&self, tag: &str) {
        self.wipe();
        for r in self.roots() {
            cp_a(&Self::snap_of(r, tag), r);
        }
    }

    /// The world of this slot as it stands (after [`Slot::restore`]).
    pub fn current(&self) -> World {
        let root = self.tmp_root.clone();
        let (shared, roots) = match &self.shm_root {
            None => (
                root.join("var/lib/disinto/claude-shared"),
                vec![("tmp", root.clone())],
            ),
            Some(shm) => (
                shm.join("claude-shared"),
                vec![("tmp", root.clone()), ("shm", shm.clone())],
            ),
        };
        World::laid_out(&root, shared, roots, Vec::new())
    }
}

/// `cp -a`, in process: every entry with its mode, owner and mtime, symlinks as symlinks, hard
/// links as hard links (within the tree).
fn cp_a(from: &Path, to: &Path) {
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    copy_exact(from, to, &mut links);
}

fn copy_exact(from: &Path, to: &Path, links: &mut HashMap<(u64, u64), PathBuf>) {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let m = fs::symlink_metadata(from).unwrap_or_else(|e| panic!("lstat {}: {e}", from.display()));
    let ft = m.file_type();
    if ft.is_symlink() {
        symlink(fs::read_link(from).unwrap(), to).unwrap();
    } else if ft.is_dir() {
        fs::create_dir(to).unwrap_or_else(|e| panic!("mkdir {}: {e}", to.display()));
        let mut names: Vec<_> = fs::read_dir(from)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            copy_exact(&from.join(&n), &to.join(&n), links);
        }
    } else if ft.is_file() {
        if m.nlink() > 1 {
            if let Some(first) = links.get(&(m.dev(), m.ino())) {
                fs::hard_link(first, to).unwrap();
                return;
            }
            links.insert((m.dev(), m.ino()), to.to_path_buf());
        }
        fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    } else {
        panic!(
            "cp_a: {} is not a file, directory or symlink",
            from.display()
        );
    }
    std::os::unix::fs::lchown(to, Some(m.uid()), Some(m.gid())).unwrap();
    if !ft.is_symlink() {
        fs::set_permissions(to, fs::Permissions::from_mode(m.mode() & 0o7777)).unwrap();
    }
    let at = TimeSpec::new(m.atime(), m.atime_nsec());
    let mt = TimeSpec::new(m.mtime(), m.mtime_nsec());
    utimensat(
        nix::fcntl::AT_FDCWD,
        to,
        &at,
        &mt,
        UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

impl Drop for Slot {
    fn drop(&mut self) {
        if std::env::var_os("DCI_KEEP_WORLD").is_some() {
            eprintln!("DCI_KEEP_WORLD: keeping {}", self.tmp_root.display());
            return;
        }
        let tags = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        for r in self.roots() {
            let _ = fs::remove_dir_all(r);
            for t in tags.iter() {
                let _ = fs::remove_dir_all(Self::snap_of(r, t));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Running the binary in a PID namespace
// ---------------------------------------------------------------------------------------------

/// The binary, in a fresh PID namespace, preceded by `wrap` (e.g. strace and its options), with
/// the world's path options and `args` (a subcommand first, if any). Same environment as
/// `World::cmd_bare`; the working directory is `/`, outside every world.
pub fn tool(w: &World, wrap: &[OsString], args: &[&str]) -> Command {
    let mut c = Command::new("unshare");
    c.args(["--pid", "--fork", "--mount-proc"]);
    if !wrap.is_empty() {
        // A traced (or killed) run gets pids from 10000 on: a recovery run, pid 1 with its
        // threads numbered from 2, must never see the dead run's pid as one of its own threads
        // (then alive, and its temp files kept).
        c.args([
            "sh",
            "-c",
            "echo 9999 > /proc/sys/kernel/ns_last_pid && exec \"$@\"",
            "sh",
        ]);
    }
    c.args(wrap).arg(BIN);
    let (sub, rest) = match args.first() {
        Some(s) if !s.starts_with('-') => (Some(*s), &args[1..]),
        _ => (None, args),
    };
    c.args(sub).args(w.path_args()).args(rest);
    w.bare_env(&mut c);
    c.current_dir("/");
    c
}

/// How a run ended.
#[derive(Debug)]
pub struct Out {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
    /// One line: exit code or signal, and the start of stderr.
    pub fn brief(&self) -> String {
        let how = match (self.code, self.signal) {
            (Some(c), _) => format!("exit {c}"),
            (None, s) => format!("signal {s:?}"),
        };
        let err: String = self.stderr.lines().take(3).collect::<Vec<_>>().join(" | ");
        format!("{how}: {err}")
    }
}

/// Run to completion; never panics on the outcome (a hang past `RUN_TIMEOUT` is killed and
/// reported as signal 9 with a note in stderr).
pub fn exec(cmd: &mut Command) -> Out {
    let mut c = Collecting::spawn(cmd);
    let child = &mut c.child;
    let start = Instant::now();
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > RUN_TIMEOUT {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        // A watchdog only: the outcome never depends on this interval.
        std::thread::sleep(Duration::from_millis(2));
    };
    let (stdout, mut stderr) = c.output();
    if timed_out {
        stderr.insert_str(0, &format!("(timed out after {RUN_TIMEOUT:?}) "));
    }
    Out {
        code: status.code(),
        signal: status.signal(),
        stdout,
        stderr,
    }
}

// ---------------------------------------------------------------------------------------------
// Traces
// ---------------------------------------------------------------------------------------------

/// One argument of a traced call, as `strace -xx -y` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    /// A string (a path), its bytes decoded.
    Str(Vec<u8>),
    /// A descriptor and the path strace resolved for it (`AT_FDCWD` is fd -100).
    Fd(i64, Option<Vec<u8>>),
    /// Anything else, as printed (flags, modes, NULL, times).
    Other(String),
}

/// One system call of a trace.
#[derive(Debug, Clone)]
pub struct Call {
    /// Position of its entry in the trace (0-based, all traced calls counted).
    pub pos: usize,
    pub tid: u32,
    pub name: String,
    pub args: Vec<Arg>,
    /// The result as printed (`0`, `5</path>`, `-1 ENOENT (...)`, `?` for a call that never
    /// returned); None while unfinished.
    pub ret: Option<String>,
    /// The string arguments as strace printed them, where [`resolve_proc_fd`] rewrote one
    /// (`/proc/self/fd/N/...`): what `-P` matches on. Empty: as `args`.
    pub literal: Vec<Arg>,
}

const AT_FDCWD: i64 = -100;

fn decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            match b[i + 1] {
                b'x' if i + 4 <= b.len() => {
                    let h = std::str::from_utf8(&b[i + 2..i + 4]).unwrap_or("");
                    if let Ok(v) = u8::from_str_radix(h, 16) {
                        out.push(v);
                        i += 4;
                        continue;
                    }
                    out.push(b[i]);
                    i += 1;
                }
                b'n' => {
                    out.push(b'\n');
                    i += 2;
                }
                b't' => {
                    out.push(b'\t');
                    i += 2;
                }
                c @ (b'\\' | b'"') => {
                    out.push(c);
                    i += 2;
                }
                _ => {
                    out.push(b[i]);
                    i += 1;
                }
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Split `a, b, [c, d], {e=f, g}` at the top-level commas.
fn split_args(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut in_str = false;
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if in_str {
            cur.push(c);
            if c == '\\' {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            } else if c == '"' {
                in_str = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_str = true;
                cur.push(c);
            }
            '[' | '{' | '(' | '<' => {
                depth += 1;
                cur.push(c);
            }
            ']' | '}' | ')' | '>' => {
                depth -= 1;
                cur.push(c);
            }
            ',' if depth == 0 => {
                out.push(cur.trim().to_string());
                cur.clear();
            }
            _ => cur.push(c),
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

fn parse_arg(t: &str) -> Arg {
    if let Some(rest) = t.strip_prefix('"') {
        let body = rest
            .strip_suffix("\"...")
            .or_else(|| rest.strip_suffix('"'));
        return Arg::Str(decode(body.unwrap_or(rest)));
    }
    let (head, path) = match t.find('<') {
        Some(i) if t.ends_with('>') => (&t[..i], Some(decode(&t[i + 1..t.len() - 1]))),
        _ => (t, None),
    };
    if head == "AT_FDCWD" {
        return Arg::Fd(AT_FDCWD, path);
    }
    if let (Ok(n), Some(p)) = (head.parse::<i64>(), path) {
        return Arg::Fd(n, Some(p));
    }
    Arg::Other(t.to_string())
}

/// Find the `)` closing the argument list that starts right after `name(`.
fn close_paren(s: &str) -> Option<usize> {
    let mut depth = 0i32;
    let mut in_str = false;
    let mut esc = false;
    for (i, c) in s.char_indices() {
        if in_str {
            if esc {
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == '"' {
                in_str = false;
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '(' | '[' | '{' => depth += 1,
            ')' if depth == 0 => return Some(i),
            ')' | ']' | '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// Parse the output of `strace -f -qq -xx -y -o FILE`: one call per entry, in entry order,
/// an unfinished call joined with its resumption.
pub fn parse_trace(text: &str) -> Vec<Call> {
    let mut calls: Vec<Call> = Vec::new();
    // tid -> (index in calls, the text before "<unfinished ...>")
    let mut pending: HashMap<u32, (usize, String)> = HashMap::new();
    for line in text.lines() {
        let line = line.trim_end();
        let Some((tid, rest)) = line.trim_start().split_once(' ') else {
            continue;
        };
        let Ok(tid) = tid.parse::<u32>() else {
            continue;
        };
        let rest = rest.trim_start();
        if rest.starts_with("+++") || rest.starts_with("---") {
            continue;
        }
        let full = if let Some(r) = rest.strip_prefix("<... ") {
            // "<... name resumed>tail"
            let Some((_, tail)) = r.split_once(" resumed>") else {
                continue;
            };
            let Some((idx, head)) = pending.remove(&tid) else {
                continue;
            };
            let text = format!("{head}{tail}");
            let c = parse_call(&text, tid, calls[idx].pos);
            if let Some(c) = c {
                calls[idx] = c;
            }
            continue;
        } else {
            rest.to_string()
        };
        if let Some(head) = full.strip_suffix(" <unfinished ...>") {
            let name = head.split('(').next().unwrap_or("").to_string();
            let pos = calls.len();
            calls.push(Call {
                pos,
                tid,
                name,
                args: Vec::new(),
                ret: None,
                literal: Vec::new(),
            });
            // Parse what we have now (the arguments are all there); the result comes later.
            if let Some(open) = head.find('(') {
                calls[pos].args = split_args(&head[open + 1..])
                    .iter()
                    .map(|a| parse_arg(a))
                    .collect();
            }
            pending.insert(tid, (pos, head.to_string()));
            continue;
        }
        let pos = calls.len();
        if let Some(c) = parse_call(&full, tid, pos) {
            calls.push(c);
        }
    }
    resolve_proc_fd(&mut calls);
    calls
}

/// Since issue 10 the tool names a file inside a directory it opened as
/// `/proc/self/fd/N/./name` (the directory by its descriptor, whatever happens to its name).
/// strace prints that string as given; the path strace resolved for descriptor N elsewhere in the
/// trace (the last one seen before the call, else the first one after) stands in for it, so the
/// durability rule, `-P` and the replay see the real directory.
fn resolve_proc_fd(calls: &mut [Call]) {
    let mut first: HashMap<i64, Vec<u8>> = HashMap::new();
    for c in calls.iter() {
        for a in &c.args {
            if let Arg::Fd(n, Some(p)) = a {
                first.entry(*n).or_insert_with(|| p.clone());
            }
        }
        if let Some(Arg::Fd(n, Some(p))) = c
            .ret
            .as_deref()
            .and_then(|r| r.split_whitespace().next())
            .map(parse_arg)
        {
            first.entry(n).or_insert(p);
        }
    }
    let mut known: HashMap<i64, Vec<u8>> = HashMap::new();
    for c in calls.iter_mut() {
        let before = c.args.clone();
        // A descriptor opened here (`= 5</path>`) names its path from the next call on.
        let opened = c
            .ret
            .as_deref()
            .and_then(|r| r.split_whitespace().next())
            .map(parse_arg);
        for a in c.args.iter_mut() {
            match a {
                Arg::Fd(n, Some(p)) => {
                    known.insert(*n, p.clone());
                }
                Arg::Str(s) => {
                    let Some(rest) = s.strip_prefix(b"/proc/self/fd/".as_slice()) else {
                        continue;
                    };
                    let end = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
                    let Some(n) = std::str::from_utf8(&rest[..end])
                        .ok()
                        .and_then(|d| d.parse::<i64>().ok())
                    else {
                        continue;
                    };
                    let Some(dir) = known.get(&n).or_else(|| first.get(&n)) else {
                        continue;
                    };
                    let mut out = dir.clone();
                    for comp in rest[end..].split(|&b| b == b'/') {
                        if comp.is_empty() || comp == b"." {
                            continue;
                        }
                        out.push(b'/');
                        out.extend_from_slice(comp);
                    }
                    *s = out;
                }
                _ => {}
            }
        }
        if c.args != before {
            c.literal = before;
        }
        if let Some(Arg::Fd(n, Some(p))) = opened {
            known.insert(n, p);
        }
    }
}

fn parse_call(text: &str, tid: u32, pos: usize) -> Option<Call> {
    let open = text.find('(')?;
    let name = text[..open].to_string();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    let body = &text[open + 1..];
    let close = close_paren(body)?;
    let args = split_args(&body[..close])
        .iter()
        .map(|a| parse_arg(a))
        .collect();
    let ret = body[close + 1..]
        .trim_start()
        .strip_prefix('=')
        .map(|r| r.trim().to_string());
    Some(Call {
        pos,
        tid,
        name,
        args,
        ret,
        literal: Vec::new(),
    })
}

impl Call {
    fn str_at(&self, i: usize) -> Option<&[u8]> {
        match self.args.get(i) {
            Some(Arg::Str(s)) => Some(s),
            _ => None,
        }
    }
    fn fd_at(&self, i: usize) -> Option<&[u8]> {
        match self.args.get(i) {
            Some(Arg::Fd(n, Some(p))) if *n != AT_FDCWD => Some(p),
            _ => None,
        }
    }
    fn other_at(&self, i: usize) -> &str {
        match self.args.get(i) {
            Some(Arg::Other(s)) => s,
            _ => "",
        }
    }

    /// The paths `strace -P` matches this call on: (string argument indices, descriptor
    /// argument indices). For `rename*` only the old name, for `symlink*` only the link name.
    fn match_slots(&self) -> (&'static [usize], &'static [usize]) {
        match self.name.as_str() {
            "open" | "creat" | "mkdir" | "rmdir" | "unlink" | "rename" | "link" | "chmod"
            | "chown" | "lchown" | "truncate" | "utimes" | "setxattr" | "lsetxattr"
            | "removexattr" | "lremovexattr" => (&[0], &[]),
            "symlink" => (&[1], &[]),
            "symlinkat" => (&[2], &[1]),
            "openat" | "mkdirat" | "unlinkat" | "renameat" | "renameat2" | "linkat"
            | "fchmodat" | "fchownat" | "utimensat" | "futimesat" => (&[1], &[0]),
            "fchmod" | "fchown" | "ftruncate" | "fallocate" | "write" | "pwrite64" | "fsync"
            | "fdatasync" | "syncfs" | "fsetxattr" | "fremovexattr" => (&[], &[0]),
            "copy_file_range" | "sendfile" => (&[], &[0, 2]),
            _ => (&[], &[]),
        }
    }

    /// The paths `-P` would match this call on: absolute ones, descriptors' paths, and relative
    /// names as passed.
    pub fn match_paths(&self) -> Vec<Vec<u8>> {
        let (s, f) = self.match_slots();
        let mut v: Vec<Vec<u8>> = Vec::new();
        let literal = if self.literal.is_empty() {
            &self.args
        } else {
            &self.literal
        };
        for &i in s {
            let lit = match literal.get(i) {
                Some(Arg::Str(p)) => Some(p.as_slice()),
                _ => None,
            };
            // A relative name too: strace matches the string as the tracee passed it, so
            // `-P name` picks `unlinkat(dirfd, "name")` out of every call on that directory,
            // whichever worker thread the directory's other entries fell to.
            if let Some(p) = lit.filter(|p| !p.is_empty()) {
                v.push(p.to_vec());
            }
        }
        for &i in f {
            if let Some(p) = self.fd_at(i) {
                v.push(p.to_vec());
            }
        }
        v.dedup();
        v
    }

    /// Every path the call names, resolved where strace could (all strings, all descriptors but
    /// the working directory). A relative string is joined to its directory descriptor.
    pub fn all_paths(&self) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        let mut dir: Option<Vec<u8>> = None;
        for a in &self.args {
            match a {
                Arg::Fd(n, Some(p)) if *n != AT_FDCWD => {
                    v.push(p.clone());
                    dir = Some(p.clone());
                }
                Arg::Fd(_, _) => dir = None,
                Arg::Str(s) if s.starts_with(b"/") => v.push(s.clone()),
                Arg::Str(s) => {
                    if let Some(d) = &dir {
                        v.push([&d[..], b"/", s].concat());
                    }
                }
                Arg::Other(_) => {}
            }
        }
        v
    }

    /// String argument `s` as an absolute path: as it is, or joined to directory descriptor `d`.
    fn joined(&self, d: usize, s: usize) -> Option<Vec<u8>> {
        let name = self.str_at(s)?;
        if name.starts_with(b"/") {
            return Some(name.to_vec());
        }
        match self.args.get(d) {
            Some(Arg::Fd(_, Some(p))) => Some([&p[..], b"/", name].concat()),
            _ => None,
        }
    }

    /// The object the call acts on, as an absolute path: `openat(dirfd, name)` is
    /// `<dirfd's path>/name`, `fchmod(fd)` is fd's path, `rename(a, b)` is `a`.
    pub fn target(&self) -> Option<Vec<u8>> {
        let joined = |d, s| self.joined(d, s);
        match self.name.as_str() {
            "open" | "creat" | "mkdir" | "rmdir" | "unlink" | "rename" | "link" | "chmod"
            | "chown" | "lchown" | "truncate" | "utimes" | "setxattr" | "lsetxattr"
            | "removexattr" | "lremovexattr" => self.str_at(0).map(<[u8]>::to_vec),
            "symlink" => self.str_at(1).map(<[u8]>::to_vec),
            "symlinkat" => joined(1, 2),
            "openat" | "mkdirat" | "unlinkat" | "renameat" | "renameat2" | "linkat"
            | "fchmodat" | "fchownat" | "futimesat" => joined(0, 1),
            "utimensat" => match self.args.get(1) {
                Some(Arg::Str(_)) => joined(0, 1),
                _ => self.fd_at(0).map(<[u8]>::to_vec),
            },
            _ => self.fd_at(0).map(<[u8]>::to_vec),
        }
    }

    /// The second path of a two-path call: the new name of `rename*`/`link*`.
    pub fn target2(&self) -> Option<Vec<u8>> {
        let joined = |d, s| self.joined(d, s);
        match self.name.as_str() {
            "rename" | "link" => self.str_at(1).map(<[u8]>::to_vec),
            "renameat" | "renameat2" | "linkat" => joined(2, 3),
            _ => None,
        }
    }

    /// The flags of an `open`/`openat` (empty for other calls).
    pub fn open_flags(&self) -> &str {
        match self.name.as_str() {
            "open" => self.other_at(1),
            "openat" => self.other_at(2),
            _ => "",
        }
    }

    /// Whether the call changes the file system (namespace, metadata or data).
    pub fn is_mutating(&self) -> bool {
        match self.name.as_str() {
            "open" | "openat" => {
                let f = self.open_flags();
                ["O_CREAT", "O_TRUNC", "O_WRONLY", "O_RDWR"]
                    .iter()
                    .any(|x| f.contains(x))
            }
            "fsync" | "fdatasync" | "syncfs" | "sync" => false,
            "write" | "pwrite64" | "copy_file_range" | "sendfile" => true,
            _ => TRACED.contains(&self.name.as_str()),
        }
    }

    /// Whether any path the call names lies under one of `roots`.
    pub fn touches(&self, roots: &[Vec<u8>]) -> bool {
        self.all_paths()
            .iter()
            .any(|p| roots.iter().any(|r| under(p, r)))
    }

    /// Short human form: `rename <old> -> <new>`, `fchmod <path> 0600`.
    pub fn show(&self) -> String {
        let t = self.target().map(|p| esc(&p)).unwrap_or_default();
        match self.target2() {
            Some(n) => format!("{} {t} -> {}", self.name, esc(&n)),
            None => format!("{} {t}", self.name),
        }
    }

    /// The same call, as far as a trace can tell: name, strings and descriptor paths (not the
    /// descriptor numbers, which differ between runs).
    pub fn same_as(&self, o: &Call) -> bool {
        // As strace printed them: a killed run's trace may end before descriptor N's path is
        // known there (see [`resolve_proc_fd`]).
        let key = |c: &Call| -> Vec<Vec<u8>> {
            let args = if c.literal.is_empty() {
                &c.args
            } else {
                &c.literal
            };
            args.iter()
                .filter_map(|a| match a {
                    Arg::Str(s) => Some(s.clone()),
                    Arg::Fd(n, p) if *n != AT_FDCWD => p.clone(),
                    _ => None,
                })
                .collect()
        };
        if self.name != o.name {
            return false;
        }
        if matches!(self.name.as_str(), "write" | "pwrite64") {
            // The bytes written (a journal holds times of the run) may differ: the file is
            // what identifies the call.
            return self.fd_at(0) == o.fd_at(0);
        }
        key(self) == key(o)
    }
}

/// `p` is `root` or inside it.
pub fn under(p: &[u8], root: &[u8]) -> bool {
    p.starts_with(root) && (p.len() == root.len() || p[root.len()] == b'/')
}

/// The world's roots as bytes.
pub fn root_bytes(w: &World) -> Vec<Vec<u8>> {
    w.roots
        .iter()
        .map(|(_, r)| r.as_os_str().as_bytes().to_vec())
        .collect()
}

/// strace's options for a trace of every call in `TRACED` into `out`.
pub fn strace_trace_args(out: &Path) -> Vec<OsString> {
    let mut v: Vec<OsString> = ["strace", "-f", "-qq", "-xx", "-y", "-s", "65535", "-e"]
        .iter()
        .map(OsString::from)
        .collect();
    v.push(format!("trace={}", TRACED.join(",")).into());
    v.push("-o".into());
    v.push(out.into());
    v
}

/// A trace of one clean run of the binary with `args` in `w`.
pub fn trace_run(w: &World, args: &[&str], out: &Path) -> (Out, Vec<Call>) {
    let o = exec(&mut tool(w, &strace_trace_args(out), args));
    let text = fs::read_to_string(out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    (o, parse_trace(&text))
}

// ---------------------------------------------------------------------------------------------
// Kill points
// ---------------------------------------------------------------------------------------------

/// One way to kill at a call: `-P path -e inject=name:signal=SIGKILL:when=n`.
#[derive(Debug, Clone)]
pub struct Aim {
    pub path: Vec<u8>,
    pub when: usize,
    /// Every call of this syscall on `path` in the trace is in the same thread.
    pub one_thread: bool,
}

/// A mutating call of a clean run, and the ways to reach it.
#[derive(Debug, Clone)]
pub struct Point {
    /// 1-based rank among the run's mutating calls on the world.
    pub k: usize,
    pub call: Call,
    pub aims: Vec<Aim>,
}

/// The kill points of a trace: every mutating call on the world, each with its aims (best
/// first). A call with no aim at all (no path strace could match it on) is still a point, and
/// fails as unreachable.
pub fn points(calls: &[Call], roots: &[Vec<u8>]) -> Vec<Point> {
    let mut out = Vec::new();
    for c in calls {
        if !c.is_mutating() || !c.touches(roots) {
            continue;
        }
        let mut aims: Vec<Aim> = c
            .match_paths()
            .into_iter()
            .map(|p| {
                let same: Vec<&Call> = calls
                    .iter()
                    .filter(|d| d.name == c.name && d.match_paths().contains(&p))
                    .collect();
                let when = same
                    .iter()
                    .filter(|d| d.tid == c.tid && d.pos <= c.pos)
                    .count();
                let one_thread = same.iter().all(|d| d.tid == c.tid);
                Aim {
                    path: p,
                    when,
                    one_thread,
                }
            })
            .collect();
        aims.sort_by_key(|a| (!a.one_thread, a.when));
        out.push(Point {
            k: out.len() + 1,
            call: c.clone(),
            aims,
        });
    }
    out
}

/// The same points for a slot whose roots are `to` instead of `from` (same lengths, same
/// layout): every path byte string is rewritten.
pub fn rebase(points: &[Point], from: &[Vec<u8>], to: &[Vec<u8>]) -> Vec<Point> {
    let fix = |p: &[u8]| -> Vec<u8> {
        for (f, t) in from.iter().zip(to) {
            if under(p, f) {
                return [&t[..], &p[f.len()..]].concat();
            }
            // A relative name that starts with a root's own name (`utimensat(fd</dev/shm>,
            // "dci-crash-…-0")`): the same name in the other slot.
            let base = |r: &[u8]| -> Vec<u8> {
                r.rsplit(|&b| b == b'/').next().unwrap_or_default().to_vec()
            };
            let (fb, tb) = (base(f), base(t));
            if !p.starts_with(b"/") && !fb.is_empty() && under(p, &fb) {
                return [&tb[..], &p[fb.len()..]].concat();
            }
        }
        p.to_vec()
    };
    points
        .iter()
        .map(|pt| {
            let mut c = pt.call.clone();
            // The literal form too: [`Call::same_as`] compares what strace printed.
            for a in c.args.iter_mut().chain(c.literal.iter_mut()) {
                match a {
                    Arg::Str(s) => *s = fix(s),
                    Arg::Fd(_, Some(p)) => *p = fix(p),
                    _ => {}
                }
            }
            Point {
                k: pt.k,
                call: c,
                aims: pt
                    .aims
                    .iter()
                    .map(|a| Aim {
                        path: fix(&a.path),
                        ..a.clone()
                    })
                    .collect(),
            }
        })
        .collect()
}

/// The outcome of a kill run.
#[derive(Debug)]
pub enum Kill {
    /// Killed at exactly the expected call.
    Hit,
    /// The run was killed elsewhere, or not at all: what strace saw.
    Missed(String),
}

/// Run the binary with `args` in `w` under strace, killing it at `aim`; check from strace's own
/// output that the call left unfinished is `expect`. `out` receives that output.
pub fn kill_at(w: &World, args: &[&str], expect: &Call, aim: &Aim, out: &Path) -> Kill {
    let _ = fs::remove_file(out);
    let mut wrap: Vec<OsString> = ["strace", "-f", "-qq", "-xx", "-y", "-s", "65535", "-o"]
        .iter()
        .map(OsString::from)
        .collect();
    wrap.push(out.into());
    wrap.push("-e".into());
    wrap.push(format!("trace={}", expect.name).into());
    wrap.push("-P".into());
    wrap.push(OsString::from(OsStr::from_bytes(&aim.path)));
    wrap.push("-e".into());
    wrap.push(format!("inject={}:signal=SIGKILL:when={}", expect.name, aim.when).into());
    let o = exec(&mut tool(w, &wrap, args));
    let text = fs::read_to_string(out).unwrap_or_default();
    let killed = text.contains("+++ killed by SIGKILL +++");
    let calls = parse_trace(&text);
    let cut: Vec<&Call> = calls
        .iter()
        .filter(|c| matches!(c.ret.as_deref(), None | Some("?")))
        .collect();
    if killed && cut.iter().any(|c| c.same_as(expect)) {
        return Kill::Hit;
    }
    Kill::Missed(format!(
        "{}; strace saw {} matching call(s), unfinished: [{}]",
        if killed {
            "killed at another call".to_string()
        } else {
            format!("not killed ({})", o.brief())
        },
        calls.len(),
        cut.iter().map(|c| c.show()).collect::<Vec<_>>().join(", ")
    ))
}

// ---------------------------------------------------------------------------------------------
// Comparing a recovered world with the migrated one
// ---------------------------------------------------------------------------------------------

/// What differs between two clean migrations of the same world at the same paths: the mtimes
/// of what they create or rewrite ("now"), and the journal's bytes. A recovered world must
/// equal a clean one in everything else.
#[derive(Debug, Default, Clone)]
pub struct Volatile {
    pub mtime: BTreeSet<Vec<u8>>,
    pub content: BTreeSet<Vec<u8>>,
}

impl Volatile {
    pub fn between(a: &Manifest, b: &Manifest) -> Volatile {
        let mut v = Volatile::default();
        for (k, x) in a {
            if let Some(y) = b.get(k) {
                if x.mtime != y.mtime {
                    v.mtime.insert(k.clone());
                }
                if x.hash != y.hash || x.size != y.size {
                    v.content.insert(k.clone());
                }
            }
        }
        // The journal records the mtimes it found, which a resumed run may have found later.
        for k in a.keys().chain(b.keys()) {
            if k.ends_with(b"/journal.json") {
                v.content.insert(k.clone());
            }
        }
        v
    }
}

/// Differences between a recovered world and the clean migrated one, overlooking only what
/// `vol` says differs between two clean runs.
pub fn diff_migrated(clean: &Manifest, got: &Manifest, vol: &Volatile) -> Vec<String> {
    diff_by(clean, got, |k, _| {
        Some(Overlook {
            owner: false,
            content: vol.content.contains(k),
            mtime: vol.mtime.contains(k),
        })
    })
}

/// The names the tool gives its own temporary things: none may survive a finished run.
pub fn leftovers(m: &Manifest) -> Vec<String> {
    const TAGS: &[&[u8]] = &[
        b".dci-probe-",
        b".dci-tmp-",
        b".dci-incoming",
        b".dci-restore",
        b".dci-state-",
        b".symlink-",
    ];
    m.keys()
        .filter(|k| {
            let name = k.rsplit(|&b| b == b'/').next().unwrap_or(k);
            TAGS.iter().any(|t| name.windows(t.len()).any(|w| w == *t))
        })
        .map(|k| esc(k))
        .collect()
}

/// Extended attributes of the tool's own (`user.disinto-claude-init.*`) anywhere in the world:
/// leftovers a manifest does not show.
pub fn xattr_leftovers(w: &World) -> Vec<String> {
    let mut out = Vec::new();
    for (label, root) in &w.roots {
        for k in manifest(root).keys() {
            let p = if k == b"." {
                root.clone()
            } else {
                root.join(bpath(k))
            };
            let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
                continue;
            };
            let mut buf = vec![0u8; 4096];
            // SAFETY: a NUL-terminated path and a buffer whose length is given.
            let n =
                unsafe { nix::libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
            let Ok(n) = usize::try_from(n) else { continue };
            for name in buf[..n].split(|&b| b == 0) {
                if name.starts_with(b"user.disinto-claude-init") {
                    out.push(format!(
                        "xattr   {label}/{}: {}",
                        esc(k),
                        String::from_utf8_lossy(name)
                    ));
                }
            }
        }
    }
    out
}

/// `diff` lines reduced to what they say about which path, for grouping failures: the slot's
/// roots and the pid in temp names are blanked.
pub fn normalise(line: &str) -> String {
    let mut s = line.to_string();
    if let Some(i) = s.find(": ") {
        s.truncate(i);
    }
    s
}
