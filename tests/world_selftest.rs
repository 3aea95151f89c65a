//! The test infrastructure must be able to fail: each detector is shown to fire on exactly the
//! change it is meant for, and the builders are shown to build what they promise.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn home_path(w: &World, rel: &[u8]) -> std::path::PathBuf {
    w.home.join(bpath(rel))
}

/// Exactly one difference, mentioning `path` and `needle`.
#[track_caller]
fn expect_one(d: &[String], path: &[u8], needle: &str) {
    assert_eq!(d.len(), 1, "expected exactly one difference, got {d:#?}");
    assert!(
        d[0].contains(&esc(path)),
        "{:?} does not name {}",
        d[0],
        esc(path)
    );
    assert!(d[0].contains(needle), "{:?} does not say {needle:?}", d[0]);
}

fn realistic() -> (World, Manifest) {
    let w = World::new();
    build_realistic_home(&w.home);
    let m = manifest(&w.home);
    (w, m)
}

#[test]
fn manifest_has_no_false_positives() {
    let (w, m1) = realistic();
    let m2 = manifest(&w.home);
    assert_same(&m1, &m2, "same tree twice");
    assert!(m1.contains_key(&b"."[..]), "root entry present");
    assert_eq!(m1[&b"."[..]].kind, Kind::Dir);
    // A missing root is an empty manifest, not a panic.
    assert!(manifest(&w.root.join("nope")).is_empty());
}

#[test]
fn assert_same_panics_with_readable_bounded_report() {
    let (w, m1) = realistic();
    for i in 0..40 {
        fs::write(w.home.join(format!("extra-{i:02}")), b"x").unwrap();
    }
    fs::write(home_path(&w, NON_UTF8_NAME), b"changed").unwrap();
    let m2 = manifest(&w.home);
    let err = std::panic::catch_unwind(|| assert_same(&m1, &m2, "selftest"))
        .expect_err("assert_same must panic");
    let msg = err.downcast_ref::<String>().expect("String panic payload");
    assert!(msg.starts_with("selftest: "), "{msg}");
    assert!(
        msg.contains("bad\\xff.jsonl"),
        "non-UTF-8 name escaped: {msg}"
    );
    assert!(msg.contains("... and "), "bounded: {msg}");
    assert!(
        msg.lines().count() <= 32,
        "at most 30 differences shown: {msg}"
    );
}

#[test]
fn detects_a_changed_byte() {
    let (w, m1) = realistic();
    let p = home_path(&w, BIG_TRANSCRIPT);
    let t = mtime_of(&p);
    let mut bytes = fs::read(&p).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    fs::write(&p, &bytes).unwrap();
    set_mtime(&p, t.0, t.1);
    let d = diff(&m1, &manifest(&w.home), Ignore::default());
    expect_one(&d, BIG_TRANSCRIPT, "content");
}

#[test]
fn detects_a_changed_mode() {
    let (w, m1) = realistic();
    set_mode(&w.home.join(".claude/.credentials.json"), 0o644);
    let d = diff(&m1, &manifest(&w.home), Ignore::default());
    expect_one(&d, b".claude/.credentials.json", "mode 0600 -> 0644");
}

#[test]
fn detects_a_changed_mtime_by_one_nanosecond() {
    let (w, m1) = realistic();
    let p = w.home.join(".claude/settings.json");
    let (s, ns) = mtime_of(&p);
    set_mtime(&p, s, ns + 1);
    let d = diff(&m1, &manifest(&w.home), Ignore::default());
    expect_one(&d, b".claude/settings.json", "mtime");
}

#[test]
fn detects_a_changed_directory_mtime_unless_ignored() {
    let (w, m1) = realistic();
    let p = w.home.join(".claude/ide");
    let (s, ns) = mtime_of(&p);
    set_mtime(&p, s + 1, ns);
    let m2 = manifest(&w.home);
    expect_one(&diff(&m1, &m2, Ignore::default()), b".claude/ide", "mtime");
    let lax = Ignore {
        dir_mtime: true,
        ..Ignore::default()
    };
    assert!(diff(&m1, &m2, lax).is_empty());
}

#[test]
fn detects_a_symlink_mtime_without_following_it() {
    let (w, m1) = realistic();
    let link = w.home.join(".claude/CLAUDE.md");
    let (s, ns) = mtime_of(&link);
    set_mtime(&link, s, ns + 5);
    let d = diff(&m1, &manifest(&w.home), Ignore::default());
    expect_one(&d, b".claude/CLAUDE.md", "mtime");
}

#[test]
fn detects_a_changed_link_target() {
    let (w, m1) = realistic();
    let link = w.home.join(".claude/CLAUDE.md");
    let dir_t = mtime_of(&w.home.join(".claude"));
    let link_t = mtime_of(&link);
    fs::remove_file(&link).unwrap();
    ln_s(w.home.join("dotfiles/CLAUDE.mD"), &link);
    set_mtime(&link, link_t.0, link_t.1);
    set_mtime(&w.home.join(".claude"), dir_t.0, dir_t.1);
    let d = diff(&m1, &manifest(&w.home), Ignore::default());
    expect_one(&d, b".claude/CLAUDE.md", "target");
}

#[test]
fn detects_a_broken_hard_link() {
    let (w, m1) = realistic();
    let a = home_path(&w, HARDLINK_A);
    let b = home_path(&w, HARDLINK_B);
    assert_eq!(m1[HARDLINK_A].link_group, m1[HARDLINK_B].link_group);
    assert!(m1[HARDLINK_A].link_group.is_some());
    // Replace b by an identical copy: same bytes, mode, mtime; parent mtime restored.
    let parent = b.parent().unwrap().to_path_buf();
    let pt = mtime_of(&parent);
    let t = mtime_of(&b);
    fs::remove_file(&b).unwrap();
    fs::write(&b, fs::read(&a).unwrap()).unwrap();
    set_mode(&b, mode_of(&a));
    set_mtime(&b, t.0, t.1);
    set_mtime(&parent, pt.0, pt.1);
    let d = diff(&m1, &manifest(&w.home), Ignore::default());
    assert_eq!(d.len(), 2, "{d:#?}");
    assert!(d.iter().all(|l| l.contains("hardlink-group")), "{d:#?}");
    assert!(!d.iter().any(|l| l.contains("content")), "{d:#?}");
}

#[test]
fn detects_an_added_and_a_removed_file() {
    let (w, m1) = realistic();
    let ide = w.home.join(".claude/ide");
    let t = mtime_of(&ide);
    fs::write(ide.join("12345.lock"), b"").unwrap();
    set_mtime(&ide, t.0, t.1);
    let d = diff(&m1, &manifest(&w.home), Ignore::default());
    expect_one(&d, b".claude/ide/12345.lock", "added");

    fs::remove_file(ide.join("12345.lock")).unwrap();
    let todos = w.home.join(".claude/todos");
    let t = mtime_of(&todos);
    fs::remove_file(todos.join("empty.json")).unwrap();
    set_mtime(&todos, t.0, t.1);
    let ide_m = m1[&b".claude/ide"[..]].mtime;
    set_mtime(&ide, ide_m.0, ide_m.1);
    let d = diff(&m1, &manifest(&w.home), Ignore::default());
    expect_one(&d, b".claude/todos/empty.json", "removed");
}

#[test]
fn world_manifest_sees_every_corner() {
    let w = World::realistic();
    let m1 = world_manifest(&w);
    assert_same(&m1, &w.manifest(), "unchanged world");
    // The env file's directory, the (absent) shared dir's parent, the home: all covered.
    fs::write(w.env_file.with_file_name(".env.tmp"), b"").unwrap();
    let d = diff(&m1, &world_manifest(&w), Ignore::default());
    assert!(
        d.iter().any(|l| l.contains("added   tmp/factory/.env.tmp")),
        "{d:#?}"
    );
    fs::create_dir(&w.shared).unwrap();
    let d = diff(&m1, &world_manifest(&w), Ignore::default());
    assert!(
        d.iter()
            .any(|l| l.contains("tmp/var/lib/disinto/claude-shared")),
        "{d:#?}"
    );
}

#[test]
fn realistic_home_has_every_awkward_case() {
    let (w, m) = realistic();
    for name in [NON_UTF8_NAME, NEWLINE_NAME, SPACES_NAME] {
        assert!(m.contains_key(name), "missing {}", esc(name));
        assert_eq!(m[name].kind, Kind::File);
    }
    assert!(m.keys().any(|k| k.contains(&0xff)), "a non-UTF-8 name");
    assert!(m.keys().any(|k| k.contains(&b'\n')), "a newline name");

    let c = |rel: &str| m[rel.as_bytes()].clone();
    assert_eq!(c(".claude").mode, 0o755);
    assert_eq!(c(".claude/.credentials.json").mode, 0o600);
    assert_eq!(c(".claude.json").mode, 0o600);
    assert_eq!(c(".claude/ide").kind, Kind::Dir);
    assert_eq!(fs::read_dir(w.home.join(".claude/ide")).unwrap().count(), 0);
    assert_eq!(m[EMPTY_FILE].size, 0);
    assert!(m[BIG_TRANSCRIPT].size >= 1 << 20);

    // Absolute links into dotfiles, resolving.
    for l in [".claude/CLAUDE.md", ".claude/commands"] {
        let t = c(l).target.unwrap();
        assert!(
            t.starts_with(w.home.to_str().unwrap().as_bytes()),
            "{l} absolute"
        );
        assert!(w.home.join(l).exists(), "{l} resolves");
    }
    assert!(
        !m.contains_key(&b".claude/commands/review.md"[..]),
        "not followed"
    );
    // Relative link resolving to an executable; a dangling link.
    assert_eq!(
        m[RELATIVE_LINK].target.as_deref(),
        Some(&b"../@anthropic-ai/claude-code/cli.js"[..])
    );
    assert_eq!(
        fs::metadata(home_path(&w, RELATIVE_LINK)).unwrap().mode() & 0o777,
        0o755
    );
    assert_eq!(m[DANGLING_LINK].kind, Kind::Symlink);
    assert!(!home_path(&w, DANGLING_LINK).exists(), "dangles");
    // Hard link pair.
    assert_eq!(m[HARDLINK_A].link_group.as_deref(), Some(HARDLINK_A));
    assert_eq!(m[HARDLINK_B].link_group.as_deref(), Some(HARDLINK_A));

    // Distinct mtimes with sub-microsecond nanoseconds; `.claude` stamped last.
    let stamped: Vec<_> = m
        .iter()
        .filter(|(k, _)| {
            (k.starts_with(b".claude/") || k.starts_with(b"dotfiles")) && k.as_slice() != HARDLINK_A
        })
        .collect();
    let mut times: Vec<_> = stamped.iter().map(|(_, n)| n.mtime).collect();
    assert!(times.iter().all(|t| t.1 % 1000 == 123), "nanoseconds set");
    times.sort();
    times.dedup();
    assert_eq!(times.len(), stamped.len(), "mtimes distinct");
    assert!(
        times.iter().all(|t| *t < c(".claude").mtime),
        ".claude last"
    );
}

#[test]
fn many_files() {
    let w = World::new();
    let dir = w.home.join(".claude/projects/-big");
    build_many_files(&dir, 1234);
    let m = manifest(&dir);
    assert_eq!(m.values().filter(|n| n.kind == Kind::File).count(), 1234);
}

#[test]
fn env_file_and_bashrc() {
    let w = World::new();
    assert!(!w.env_file.exists() && w.env_file.parent().unwrap().is_dir());
    write_env_file(&w.env_file);
    write_bashrc(&w.profile);
    assert_eq!(mode_of(&w.env_file), 0o600);
    assert_eq!(mode_of(&w.profile), 0o644);
    let env = fs::read_to_string(&w.env_file).unwrap();
    assert!(!env.contains('\r'));
    assert!(env.contains("export FORGE_TOKEN=\"abc|def&ghi\"\n"));
    assert!(env.contains("\nCLAUDE_CONFIG_DIR=/home/user/.claude\n"));
    assert!(env.contains("\n\n") && env.starts_with('#'));
    assert_eq!(fs::read_to_string(&w.profile).unwrap(), BASHRC_CONTENT);
}

#[test]
fn world_layout() {
    let w = World::new();
    assert!(w.home.is_dir());
    assert!(w.home.starts_with(&w.root) && w.root.starts_with("/tmp"));
    assert!(!w.shared.exists(), "the tool creates the shared dir");
    assert!(w.shared.parent().unwrap().is_dir());
    assert_eq!(w.config, w.shared.join("config"));
    assert_eq!(w.profile, w.home.join(".bashrc"));
    assert!(!w.claude().exists() && !w.claude_json().exists());
    let root = w.root.clone();
    drop(w);
    assert!(!root.exists(), "cleaned up");
}

#[test]
fn cross_device_world_or_skip() {
    let Some(w) = World::cross_device() else {
        return;
    };
    let dev = |p: &Path| fs::metadata(p).unwrap().dev();
    assert_ne!(dev(&w.home), dev(w.shared.parent().unwrap()));
    assert!(!w.shared.exists());
    assert_eq!(w.roots.len(), 2);
    build_realistic_home(&w.home);
    let m = world_manifest(&w);
    assert!(m.keys().any(|k| k.starts_with(b"shm")));
    assert!(m.contains_key(&b"tmp/home/user/.claude/settings.json"[..]));
}

#[test]
fn cmd_runs_the_binary_with_a_clean_environment() {
    let w = World::new();
    let c = w.cmd();
    assert_eq!(c.get_program(), BIN);
    let args: Vec<_> = c.get_args().collect();
    let want: Vec<std::ffi::OsString> = w.path_args();
    assert_eq!(args, want.iter().map(|s| s.as_os_str()).collect::<Vec<_>>());
    let envs: Vec<_> = c
        .get_envs()
        .map(|(k, v)| (k.to_str().unwrap().to_string(), v.map(|v| v.to_owned())))
        .collect();
    let names: Vec<_> = envs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["DCI_TEST_WORLD", "HOME", "LANG", "PATH"]);
    assert_eq!(envs[0].1.as_deref(), Some(w.token()));
    assert_eq!(envs[1].1.as_deref(), Some(w.home.as_os_str()));
    // The environment really is cleared (only what was set reaches the child).
    // cargo runs tests with CARGO_MANIFEST_DIR etc. set: none of it may reach the child.
    assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
    let mut probe = std::process::Command::new("env");
    probe.env_clear().envs(
        w.cmd_bare()
            .get_envs()
            .filter_map(|(k, v)| v.map(|v| (k, v))),
    );
    let out = run(&mut probe).stdout;
    assert!(!out.contains("CARGO"), "{out}");
    assert!(out.contains("LANG=C.UTF-8"), "{out}");
    let sub: Vec<_> = w
        .cmd_sub("status")
        .get_args()
        .map(|a| a.to_owned())
        .collect();
    assert_eq!(sub[0], "status");
    assert_eq!(&sub[1..], &want[..]);
}

#[test]
fn run_json_parses_stdout_and_keeps_the_exit_code() {
    let mut c = std::process::Command::new("sh");
    c.args([
        "-c",
        "echo '{\"layout\":\"legacy\"}'; echo noise >&2; exit 3",
    ]);
    let (code, v) = run_json(&mut c);
    assert_eq!(code, 3);
    assert_eq!(v["layout"], "legacy");
}

#[test]
#[should_panic(expected = "not one JSON document")]
fn run_json_rejects_non_json() {
    let mut c = std::process::Command::new("sh");
    c.args(["-c", "echo 'migrated!'"]);
    run_json(&mut c);
}

#[test]
fn tmpfs_mount_or_skip() {
    let Some(t) = mount_tmpfs("1M") else {
        return;
    };
    let path = t.path.clone();
    assert_ne!(
        fs::metadata(&path).unwrap().dev(),
        fs::metadata("/tmp").unwrap().dev()
    );
    fs::write(path.join("small"), vec![0u8; 100 * 1024]).unwrap();
    let err = fs::write(path.join("big"), vec![0u8; 2 << 20]).expect_err("fills up");
    assert_eq!(err.raw_os_error(), Some(28), "ENOSPC: {err}");
    drop(t);
    assert!(!path.exists(), "unmounted and removed");
}

#[test]
fn every_fixture_loads() {
    for name in FIXTURES {
        let w = load_fixture(name);
        let claude = w.claude();
        let lst = fs::symlink_metadata(&claude);
        let cfg_files = || fs::read_dir(&w.config).map(|d| d.count()).unwrap_or(0);
        assert_eq!(mode_of(&w.profile), 0o644, "{name}: .bashrc");
        match *name {
            "fresh" => {
                assert!(lst.is_err(), "{name}");
                assert!(!w.shared.exists(), "{name}");
            }
            "legacy" => {
                assert!(lst.unwrap().is_dir());
                assert_eq!(mode_of(&claude), 0o700);
                assert_eq!(mode_of(&claude.join(".credentials.json")), 0o600);
                assert_eq!(mode_of(&w.claude_json()), 0o600);
                assert!(claude.join("ide").is_dir());
                assert!(claude.join("local/node_modules/.bin/claude").is_file());
                assert_eq!(
                    link_target(&claude.join("local/node_modules/.bin/claude")),
                    b"../@anthropic-ai/claude-code/cli.js"
                );
                assert!(!w.shared.exists());
            }
            "migrated" => {
                assert!(lst.unwrap().file_type().is_symlink());
                assert_eq!(fs::canonicalize(&claude).unwrap(), w.config);
                assert_eq!(
                    fs::read_link(w.claude_json()).unwrap(),
                    w.config.join(".claude.json")
                );
                assert_eq!(mode_of(&w.config), 0o700);
                assert_eq!(mode_of(&w.config.join(".credentials.json")), 0o600);
                assert!(w.config.join("ide").is_dir());
            }
            "adopt" => {
                assert!(lst.unwrap().is_dir());
                assert_eq!(fs::read_dir(&claude).unwrap().count(), 0);
                assert!(cfg_files() > 0);
                assert!(!w.claude_json().exists());
            }
            "conflict" => {
                assert!(fs::read_dir(&claude).unwrap().count() > 0);
                assert!(cfg_files() > 0);
                assert_ne!(
                    fs::read(claude.join("settings.json")).unwrap(),
                    fs::read(w.config.join("settings.json")).unwrap()
                );
            }
            "foreign-symlink" => {
                assert!(lst.unwrap().file_type().is_symlink());
                assert_eq!(
                    fs::read_link(&claude).unwrap(),
                    w.home.join("dotfiles/claude")
                );
                assert!(claude.join("settings.json").is_file());
                assert!(!w.shared.exists());
            }
            "dangling-symlink" => {
                assert!(lst.unwrap().file_type().is_symlink());
                assert!(!claude.exists(), "dangles");
            }
            "not-a-directory" => {
                assert!(lst.unwrap().is_file());
            }
            other => panic!("untested fixture {other}"),
        }
    }
}
