//! Issue 10: safe as root over a home its owner controls (docs/security.md).
//!
//! Every test runs the real binary as root for a home owned by a real unprivileged user U
//! (`setpriv`, see `common::attacker`), with a root-owned canary tree `$R` next to the world.
//! Races are made deterministic with `pause` failpoints: the binary stops at the phase under
//! attack, U does its swap, the binary goes on. After the run, the canaries must be exactly as
//! planted (full manifest, owners included) and the token of `$R`'s root-only files must be in
//! nothing U can read (U's own `grep -r` over the whole world, the journal included).
//!
//! Needs root and the `failpoints` feature (`cargo test --all-features`). A test whose fix has
//! not landed yet is `#[ignore = "issue 10 finding N: ..."]`: `cargo test -- --ignored` runs them.

mod common;

use common::attacker::*;
use common::*;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A world whose home (the realistic one, with a `.bashrc`) belongs to U, and the canaries.
struct Box {
    w: World,
    u: User,
    v: User,
    r: Canaries,
}

fn setup(cross: bool) -> Option<Box> {
    let (u, v) = users()?;
    let w = if cross {
        World::cross_device()?
    } else {
        World::new()
    };
    build_realistic_home(&w.home);
    write_bashrc(&w.profile);
    u.give(&w.home);
    let r = Canaries::plant(&w.root);
    Some(Box { w, u, v, r })
}

impl Box {
    /// Canaries intact, the token unreadable by U.
    #[track_caller]
    fn check(&self) {
        self.r.assert_intact();
        let roots: Vec<&Path> = self.w.roots.iter().map(|(_, p)| p.as_path()).collect();
        assert_token_unreadable(&self.u, &roots, &self.r);
    }

    /// `migrate --yes` as root, without an env file (tests of the env file add their own).
    fn migrate(&self) -> Command {
        let mut c = self.w.cmd_sub("migrate");
        c.args(["--yes", "--no-env-file"]);
        c
    }

    fn undo(&self) -> Command {
        let mut c = self.w.cmd_sub("undo");
        c.args(["--yes", "--no-env-file"]);
        c
    }

    /// `undo` (as `cmd` runs it) succeeds and puts the world back as it was `before`; the
    /// canaries intact.
    #[track_caller]
    fn undo_restores(&self, before: &Manifest, mut cmd: Command) {
        ok(&run(&mut cmd), "undo");
        assert_same(before, &self.w.manifest(), "the world after undo");
        self.check();
    }

    /// `SUB --yes` as root, with the world's env file.
    fn with_env_file(&self, sub: &str) -> Command {
        let mut c = self.w.cmd_sub(sub);
        c.arg("--yes");
        c
    }

    fn incoming(&self) -> PathBuf {
        let mut s = self.w.config.clone().into_os_string();
        s.push(".dci-incoming");
        s.into()
    }

    /// Where today's tool keeps the journal of this home.
    fn journal(&self) -> PathBuf {
        self.w
            .home
            .join(".local/state/disinto/claude-init/journal.json")
    }
}

/// Refused (3), saying `says` and a fix, having changed nothing; the canaries intact.
#[track_caller]
fn refused(b: &Box, cmd: &mut Command, says: &str) {
    let before = b.w.manifest();
    let r = run(cmd);
    assert_eq!(r.code, 3, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains(says),
        "expected {says:?} in:\n{}",
        r.stderr
    );
    assert!(r.stderr.contains("fix:"), "{}", r.stderr);
    assert_same(&before, &b.w.manifest(), "a refusal changes nothing");
    b.check();
}

/// Nothing in the world is writable by everyone.
#[track_caller]
fn assert_nothing_world_writable(b: &Box) {
    let ww: Vec<String> =
        b.w.roots
            .iter()
            .flat_map(|(_, r)| world_writable(r))
            .collect();
    assert!(ww.is_empty(), "world-writable after the migration: {ww:#?}");
}

/// `link` is still a symlink to `target`.
#[track_caller]
fn assert_link(link: &Path, target: &Path) {
    let m = std::fs::symlink_metadata(link).unwrap();
    assert!(
        m.file_type().is_symlink(),
        "{} is no longer a symlink: {:?}, mode {:o}",
        link.display(),
        m.file_type(),
        mode_of(link)
    );
    assert_eq!(bpath(&link_target(link)), target);
}

// ---------------------------------------------------------------------------------------------
// Finding 1: the journal is trusted
// ---------------------------------------------------------------------------------------------

/// U rewrites the journal of a finished migration so that its steps name `$R`; root's next run
/// (`undo`, or `migrate` resuming) must not act on them.
fn forge_journal(b: &Box, state: &str) {
    let real: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.journal()).expect("the journal of the migration"))
            .expect("journal JSON");
    let mut j = real.clone();
    let run = j["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["run"].as_u64().unwrap())
        .max()
        .unwrap()
        + 1;
    let (uid, gid) = (b.u.uid, b.u.gid);
    let p = |rel: &str| b.r.path(rel).to_str().unwrap().to_owned();
    let home = |rel: &str| b.w.home.join(rel).to_str().unwrap().to_owned();
    let secret = std::fs::read(b.r.path("secret")).unwrap();
    let forged = serde_json::json!([
        {"run": run, "state": state,
         "step": {"id": "secure-config-dir", "path": p("etc/profile.d"), "uid": uid, "gid": gid, "chown": true},
         "undo": {"recorded": true, "dir_meta": {"mode": 0o777, "uid": uid, "gid": gid, "mtime": [1, 0]}}},
        {"run": run, "state": state,
         "step": {"id": "move-config", "from": home("loot"), "to": p("important"), "method": "rename", "files": 1, "bytes": 1},
         "undo": {"recorded": true}},
        {"run": run, "state": state,
         "step": {"id": "link-claude-json", "link": p("etc/ld.so.preload"), "target": home("evil.so")},
         "undo": {"recorded": true, "prev_link": home("evil.so"),
                  "file_meta": {"mode": 0o777, "uid": uid, "gid": gid, "mtime": [1, 0]}}},
        {"run": run, "state": state,
         "step": {"id": "write-env-file", "path": p("secret")},
         "undo": {"recorded": true, "existed": true, "prev_bytes": "pwned\n",
                  "file_meta": {"mode": 0o666, "uid": uid, "gid": gid, "mtime": [1, 0]},
                  "after_hash": blake3::hash(&secret).to_hex().to_string()}},
        {"run": run, "state": state,
         "step": {"id": "create-shared-dir", "dirs": [p("empty")]},
         "undo": {"recorded": true, "created_dirs": [p("empty")]}}
    ]);
    j["entries"]
        .as_array_mut()
        .unwrap()
        .extend(forged.as_array().unwrap().iter().cloned());
    // The attacker's file, then the attacker puts it in place: whatever guards the journal's
    // directory, U owns the home and can rebuild `~/.local` as they like.
    let forged_file = b.w.home.join("forged.json");
    std::fs::write(&forged_file, serde_json::to_vec_pretty(&j).unwrap()).unwrap();
    b.u.give(&forged_file);
    let state_dir = b.journal().parent().unwrap().to_path_buf();
    b.u.must(&format!(
        "cd {home}
         if ! mv -f forged.json {j} 2>/dev/null; then
           mv .local .local.moved
           mkdir -p {sd}
           mv forged.json {j}
         fi
         test -f {j}",
        home = q(&b.w.home),
        j = q(&b.journal()),
        sd = q(&state_dir),
    ));
}

/// Refused (3): the journal is not one root wrote.
#[track_caller]
fn untrusted(r: &Run) {
    assert_eq!(r.code, 3, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("The journal will not be acted on"),
        "{}",
        r.stderr
    );
}

/// A finished migration, its journal forged with entries in `state`: `next` refuses it.
fn forged_journal_is_not_obeyed(state: &str, next: fn(&Box) -> Command) {
    let Some(b) = setup(false) else { return };
    ok(&run(&mut b.migrate()), "migrate");
    forge_journal(&b, state);
    let before = b.w.manifest();
    let r = run(&mut next(&b));
    untrusted(&r);
    assert_same(&before, &b.w.manifest(), "a refusal changes nothing");
    b.check();
}

#[test]
fn f1_a_forged_journal_is_not_obeyed_by_undo() {
    forged_journal_is_not_obeyed("done", Box::undo);
}

#[test]
fn f1_b_a_forged_journal_is_not_obeyed_by_a_resumed_migrate() {
    forged_journal_is_not_obeyed("planned", Box::migrate);
}

// ---------------------------------------------------------------------------------------------
// Findings 2, 3: the staging dir swapped during a cross-device copy
// ---------------------------------------------------------------------------------------------

#[test]
fn f2_staging_swapped_for_a_link_before_the_metadata_fixes() {
    let Some(b) = setup(true) else { return };
    // A ~/.claude whose only directory is named like the one in $R/etc the attacker wants,
    // mode 0777 (directory metadata is fixed deepest first: with other directories in the
    // tree, the first one missing from $R/etc would stop the run before `profile.d`).
    std::fs::remove_dir_all(b.w.claude()).unwrap();
    write_file(&b.w.claude().join("settings.json"), b"{}\n", 0o644);
    mkdir(&b.w.claude().join("profile.d"), 0o777);
    b.u.give(&b.w.claude());
    let mut p = spawn_paused(&mut b.migrate(), &["copy-meta"]);
    assert!(
        p.reached("copy-meta"),
        "the copy never reached its metadata phase"
    );
    // The shared dir was handed to U: U may rename what is in it.
    b.u.must(&format!(
        "mv {inc} {shared}/stash && ln -s {etc} {inc}",
        inc = q(&b.incoming()),
        shared = q(&b.w.shared),
        etc = q(&b.r.path("etc")),
    ));
    let r = p.finish(&["copy-meta"]);
    ended(&r);
    b.check();
}

#[test]
fn f3_source_and_staging_swapped_before_the_data_copy() {
    let Some(b) = setup(true) else { return };
    plant_u_token(&b);
    b.u.give(&b.w.claude().join("nest"));
    let points = ["copy-data", "copy-meta"];
    let mut p = spawn_paused(&mut b.migrate(), &points);
    assert!(
        p.reached("copy-data"),
        "the copy never reached its data phase"
    );
    let stash = b.w.shared.join("stash");
    swap_staging_and_source(&b, &mut p, &b.incoming(), &b.w.claude(), &stash);
    let r = p.finish(&points);
    ended(&r);
    b.check();
}

/// Paused at `copy-data` (`p`), a copy from `src` into the staging dir `staging`: U moves the
/// staging dir to `stash` and puts its own tree of the same directories in its place, and
/// points `src/nest` at `$R/nest` (whose `sub/token` root can read). The copy goes on; if it
/// reaches `copy-meta`, U takes whatever root wrote into its tree before the run cleans up, and
/// the answer is true (the copy paused there).
fn swap_staging_and_source(
    b: &Box,
    p: &mut Paused,
    staging: &Path,
    src: &Path,
    stash: &Path,
) -> bool {
    b.u.must(&format!(
        "mv {st} {stash}
         mkdir {st}
         cd {src} && find . -type d -exec mkdir -p {st}/{{}} \\;
         mv {src}/nest {home}/nest.orig && ln -s {rnest} {src}/nest",
        st = q(staging),
        stash = q(stash),
        src = q(src),
        home = q(&b.w.home),
        rnest = q(&b.r.path("nest")),
    ));
    p.release("copy-data");
    let at_meta = p.reached("copy-meta");
    if at_meta {
        b.u.sh(&format!(
            "cat {st}/nest/sub/token > {home}/loot",
            st = q(staging),
            home = q(&b.w.home)
        ));
    }
    at_meta
}

/// `~/.claude/nest/sub/token`: U's file of the size of the root secret `$R/nest/sub/token`.
fn plant_u_token(b: &Box) {
    let size = std::fs::metadata(b.r.path("nest/sub/token")).unwrap().len() as usize;
    write_file(
        &b.w.claude().join("nest/sub/token"),
        &vec![b'u'; size],
        0o644,
    );
}

// ---------------------------------------------------------------------------------------------
// Finding 4: the source removal follows a swapped link
// ---------------------------------------------------------------------------------------------

#[test]
fn f4_source_removal_does_not_follow_a_swapped_directory() {
    let Some(b) = setup(true) else { return };
    // ~/.claude/a/b/... mirrors $R/victim/b/...
    for i in 0..5 {
        write_file(&b.w.claude().join(format!("a/b/f{i}")), b"mine\n", 0o644);
        write_file(&b.w.claude().join(format!("a/b/c/g{i}")), b"mine\n", 0o644);
    }
    b.u.give(&b.w.claude().join("a"));
    // Depth 1 of the removal: `~/.claude/a` listed, `~/.claude/a/b` not opened yet.
    let aside = b.w.home.join("a.orig");
    swapped_while_removed(&b, b.migrate(), &b.w.claude(), &aside);
}

/// `cmd` paused when its removal of `tree` has listed `tree/a` (depth 1) but not opened
/// `tree/a/b`; U moves `tree/a` to `aside` and puts a link to `$R/victim` in its place. The
/// removal must notice and not follow it.
fn swapped_while_removed(b: &Box, mut cmd: Command, tree: &Path, aside: &Path) {
    let point = "remove-tree-listed-1";
    let mut p = spawn_paused(&mut cmd, &[point]);
    assert!(
        p.reached(point),
        "the removal of {} never started",
        tree.display()
    );
    b.u.must(&format!(
        "mv {tree}/a {aside} && ln -s {victim} {tree}/a",
        tree = q(tree),
        aside = q(aside),
        victim = q(&b.r.path("victim")),
    ));
    let r = p.finish(&[point]);
    ended(&r);
    assert!(
        r.stderr.contains("no longer the directory that was listed"),
        "exit {}\n{}",
        r.code,
        r.stderr
    );
    b.check();
}

// ---------------------------------------------------------------------------------------------
// Finding 5: symlinked dotfiles (stow, chezmoi, yadm)
// ---------------------------------------------------------------------------------------------

/// `~/.bashrc -> dotfiles/bashrc`, as GNU stow makes it.
fn stow_bashrc(b: &Box) -> PathBuf {
    let target = b.w.home.join("dotfiles/bashrc");
    std::fs::rename(&b.w.profile, &target).unwrap();
    ln_s("dotfiles/bashrc", &b.w.profile);
    b.u.give(&b.w.home);
    target
}

#[test]
fn f5_a_stow_style_bashrc_is_edited_through_its_link_and_undone() {
    let Some(b) = setup(false) else { return };
    let target = stow_bashrc(&b);
    let before = b.w.manifest();
    ok(&run(&mut b.migrate()), "migrate");
    assert_link(&b.w.profile, Path::new("dotfiles/bashrc"));
    let m = std::fs::symlink_metadata(&target).unwrap();
    assert!(m.is_file());
    assert_eq!(mode_of(&target), 0o644, "the target's mode changed");
    assert_eq!(
        (
            std::os::unix::fs::MetadataExt::uid(&m),
            std::os::unix::fs::MetadataExt::gid(&m)
        ),
        (b.u.uid, b.u.gid)
    );
    let text = std::fs::read_to_string(&target).unwrap();
    assert!(text.starts_with(BASHRC_CONTENT), "{text}");
    assert!(text.contains("# >>> disinto-claude-init >>>"), "{text}");
    assert_nothing_world_writable(&b);
    b.undo_restores(&before, b.undo());
}

#[test]
fn f5_b_a_bashrc_linked_to_a_root_file_is_refused() {
    let Some(b) = setup(false) else { return };
    std::fs::remove_file(&b.w.profile).unwrap();
    ln_s(b.r.path("secret"), &b.w.profile);
    refused(&b, &mut b.migrate(), "not the home's owner's");
}

// ---------------------------------------------------------------------------------------------
// Findings 6, 7: the env file (a link to root's, or root's own) and its secrets
// ---------------------------------------------------------------------------------------------

/// An env file at `f`, 0600, holding the canary token besides the factory's entries.
fn write_token_env_file(b: &Box, f: &Path) {
    write_file(
        f,
        format!("{ENV_FILE_CONTENT}API_KEY={}\n", b.r.token).as_bytes(),
        0o600,
    );
}

/// `<root>/etc-disinto/env`, root 0600 in a root 0755 directory, holding the canary token.
fn root_env_file(b: &Box) -> PathBuf {
    let f = b.w.root.join("etc-disinto/env");
    write_token_env_file(b, &f);
    f
}

#[test]
fn f6_a_symlinked_env_file_is_edited_through_its_link_and_stays_root_only() {
    let Some(b) = setup(false) else { return };
    let target = root_env_file(&b);
    ln_s(&target, &b.w.env_file);
    let before = b.w.manifest();
    ok(&run(&mut b.with_env_file("migrate")), "migrate");
    assert_link(&b.w.env_file, &target);
    assert_eq!(mode_of(&target), 0o600);
    let m = std::fs::symlink_metadata(&target).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&m), 0);
    let text = std::fs::read_to_string(&target).unwrap();
    assert!(
        text.contains(&format!("CLAUDE_CONFIG_DIR={}", b.w.config.display())),
        "{text}"
    );
    b.check();
    b.undo_restores(&before, b.with_env_file("undo"));
}

#[test]
fn f7_the_secrets_of_a_root_env_file_never_reach_a_file_u_can_read() {
    let Some(b) = setup(false) else { return };
    write_token_env_file(&b, &b.w.env_file);
    let before = b.w.manifest();
    ok(&run(&mut b.with_env_file("migrate")), "migrate");
    b.check();
    b.undo_restores(&before, b.with_env_file("undo"));
}

// ---------------------------------------------------------------------------------------------
// Finding 8 and the second user: adopting a directory that is not U's
// ---------------------------------------------------------------------------------------------

#[test]
fn f8_adopt_refuses_a_foreign_config_dir_named_by_u_s_env_file() {
    let Some(b) = setup(false) else { return };
    std::fs::remove_dir_all(b.w.claude()).unwrap();
    // U's own env file names root's directories.
    let envf = b.w.home.join("factory.env");
    write_file(
        &envf,
        format!(
            "CLAUDE_SHARED_DIR={}\nCLAUDE_CONFIG_DIR={}\n",
            b.r.root.display(),
            b.r.path("etc2").display()
        )
        .as_bytes(),
        0o600,
    );
    b.u.give(&envf);
    let mut c = b.w.cmd_bare();
    c.arg("migrate")
        .arg("--yes")
        .arg("--home")
        .arg(&b.w.home)
        .arg("--env-file")
        .arg(&envf)
        .arg("--profile")
        .arg(&b.w.profile);
    refused(&b, &mut c, "adopting it would hand them over");
}

#[test]
fn m4_a_second_user_is_not_given_the_first_user_s_config_dir() {
    let Some(b) = setup(false) else { return };
    ok(&run(&mut b.migrate()), "migrate U");
    // V: a home with no ~/.claude, migrated into the same shared dir.
    let vhome = b.w.root.join("home/v");
    mkdir(&vhome, 0o755);
    b.v.give(&vhome);
    let mut c = b.w.cmd_bare();
    c.arg("migrate")
        .arg("--yes")
        .arg("--no-env-file")
        .arg("--no-modify-profile")
        .arg("--home")
        .arg(&vhome)
        .arg("--shared-dir")
        .arg(&b.w.shared);
    let says = format!("belongs to uid {}, neither root", b.u.uid);
    refused(&b, &mut c, &says);
}

// ---------------------------------------------------------------------------------------------
// Finding 9: the config dir swapped for a link right after the rename
// ---------------------------------------------------------------------------------------------

#[test]
fn f9_config_dir_swapped_after_the_rename() {
    let Some(b) = setup(false) else { return };
    let point = "applied-move-config";
    let mut p = spawn_paused(&mut b.migrate(), &[point]);
    assert!(p.reached(point), "the move never happened");
    b.u.must(&format!(
        "mv {config} {shared}/stash && ln -s {etc2} {config}",
        config = q(&b.w.config),
        shared = q(&b.w.shared),
        etc2 = q(&b.r.path("etc2")),
    ));
    let r = p.finish(&[point]);
    // The config dir it renamed is gone from under it: the run stops and rolls back (6 when
    // the attacker's leftovers in the shared dir keep it from being removed).
    ended(&r);
    assert_ne!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    b.check();
}

// ---------------------------------------------------------------------------------------------
// Medium: the state dir through a link, foreign or open shared dirs, a device as env file
// ---------------------------------------------------------------------------------------------

#[test]
fn m1_a_state_dir_linked_into_root_s_tree_is_not_written() {
    let Some(b) = setup(false) else { return };
    ln_s(&b.r.root, &b.w.home.join(".local/state"));
    b.u.give(&b.w.home.join(".local"));
    refused(&b, &mut b.migrate(), "Cannot create the journal");
}

#[test]
fn m2_a_shared_dir_owned_by_another_user_is_refused() {
    let Some(b) = setup(false) else { return };
    mkdir(&b.w.shared, 0o755);
    b.v.give(&b.w.shared);
    let says = format!("belongs to uid {}, neither root", b.v.uid);
    refused(&b, &mut b.migrate(), &says);
}

#[test]
fn m2_a_world_writable_shared_dir_is_refused() {
    let Some(b) = setup(false) else { return };
    mkdir(&b.w.shared, 0o777);
    refused(&b, &mut b.migrate(), "is writable by everyone (mode 0777)");
}

/// `mknod` a character device (1,3: what /dev/null is; 1,5: /dev/zero) at `path`.
fn mknod_char(path: &Path, minor: u64) {
    nix::sys::stat::mknod(
        path,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, minor),
    )
    .unwrap_or_else(|e| panic!("mknod {}: {e}", path.display()));
}

/// A run that must be refused (3) before reading or changing anything, under a 1 GiB address
/// space limit (so a tool that reads `/dev/zero` fails fast instead of eating the machine).
#[track_caller]
fn refused_untouched(b: &Box, cmd: &mut Command, says: &str) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let lim = nix::libc::rlimit {
                rlim_cur: 1 << 30,
                rlim_max: 1 << 30,
            };
            if nix::libc::setrlimit(nix::libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    refused(b, cmd, says);
}

#[test]
fn m3_an_env_file_that_is_a_device_is_refused_and_kept() {
    let Some(b) = setup(false) else { return };
    mknod_char(&b.w.env_file, 3);
    refused_untouched(&b, &mut b.with_env_file("migrate"), "is a character device");
}

#[test]
fn low_an_env_file_that_is_a_fifo_is_refused_not_waited_on() {
    let Some(b) = setup(false) else { return };
    nix::unistd::mkfifo(
        &b.w.env_file,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    for sub in ["migrate", "status"] {
        refused_untouched(&b, &mut b.with_env_file(sub), "is a fifo");
    }
}

#[test]
fn low_an_rc_file_that_is_a_fifo_is_refused_not_waited_on() {
    let Some(b) = setup(false) else { return };
    std::fs::remove_file(&b.w.profile).unwrap();
    nix::unistd::mkfifo(
        &b.w.profile,
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    b.u.give(&b.w.profile);
    refused_untouched(&b, &mut b.migrate(), "is a fifo");
}

#[test]
fn low_an_env_file_that_never_ends_is_refused_not_read() {
    let Some(b) = setup(false) else { return };
    // /dev/zero behind a link, as `--env-file` could name it.
    let zero = b.w.root.join("zero");
    mknod_char(&zero, 5);
    ln_s(&zero, &b.w.env_file);
    for sub in ["migrate", "status"] {
        refused_untouched(&b, &mut b.with_env_file(sub), "is a character device");
    }
}

#[test]
fn low_an_oversized_env_file_is_refused_not_read() {
    let Some(b) = setup(false) else { return };
    let mut big = ENV_FILE_CONTENT.as_bytes().to_vec();
    big.resize(2 << 20, b'#');
    write_file(&b.w.env_file, &big, 0o600);
    refused_untouched(
        &b,
        &mut b.with_env_file("migrate"),
        "holds more than 1048576 bytes",
    );
}

// ---------------------------------------------------------------------------------------------
// Low: system directories as the home, a home holding the shared dir, paths too long
// ---------------------------------------------------------------------------------------------

#[track_caller]
fn usage_error(b: &Box, args: &[&OsStr], kind: &str) {
    usage_error_of(b, &["migrate", "status", "undo"], args, kind);
}

#[track_caller]
fn usage_error_of(b: &Box, subs: &[&str], args: &[&OsStr], kind: &str) {
    let before = b.w.manifest();
    for sub in subs {
        let (code, doc) = run_json(
            b.w.cmd_bare()
                .arg(sub)
                .args(["--yes", "--json", "--no-env-file", "--no-modify-profile"])
                .args(args),
        );
        assert_eq!(code, 2, "{sub} {args:?}: {doc:#}");
        assert_eq!(doc["error"]["kind"], kind, "{doc:#}");
        assert!(doc["error"]["fix"].is_string(), "{doc:#}");
    }
    assert_same(&before, &b.w.manifest(), "a usage error changes nothing");
    b.check();
}

#[test]
fn low_system_directories_are_not_homes() {
    let Some(b) = setup(false) else { return };
    let shared = b.w.shared.as_os_str();
    // Also a home that is a link to one.
    let link = b.w.root.join("home/etc-link");
    ln_s("/etc", &link);
    let system = [
        "/", "/etc", "/usr", "/var", "/var/lib", "/proc", "/usr/lib", "/etc/ssh", "/run", "/home",
    ];
    for home in system.map(OsStr::new).into_iter().chain([link.as_os_str()]) {
        usage_error(
            &b,
            &["--home".as_ref(), home, "--shared-dir".as_ref(), shared],
            "system-dir-home",
        );
    }
}

#[test]
fn low_a_home_containing_the_shared_dir_is_refused() {
    let Some(b) = setup(false) else { return };
    // Root acting for U: U's home must not hold the shared dir, nor the config dir. (`status`
    // and `verify` only read: they show such a layout.)
    let inside = b.w.home.join("shared");
    let config_inside = b.w.home.join("cfg");
    for (flag, p) in [("--shared-dir", &inside), ("--config-dir", &config_inside)] {
        usage_error_of(
            &b,
            &["migrate", "undo"],
            &[
                "--home".as_ref(),
                b.w.home.as_os_str(),
                flag.as_ref(),
                p.as_os_str(),
            ],
            "home-contains-shared-dir",
        );
    }
}

#[test]
fn low_a_path_longer_than_the_filesystem_allows_is_a_usage_error() {
    let Some(b) = setup(false) else { return };
    let home = b.w.home.as_os_str();
    // A component longer than NAME_MAX (255 on every Linux filesystem in use).
    let long_name = b.w.root.join("x".repeat(300));
    // A path longer than PATH_MAX (4096), in components that are each fine.
    let mut deep = b.w.root.clone();
    while deep.as_os_str().len() < 5000 {
        deep.push("y".repeat(200));
    }
    // A config dir whose name leaves no room for `<name>.dci-incoming`.
    let tight = b.w.shared.join("z".repeat(250));
    for (flag, p) in [
        ("--shared-dir", &long_name),
        ("--shared-dir", &deep),
        ("--config-dir", &tight),
    ] {
        usage_error(
            &b,
            &["--home".as_ref(), home, flag.as_ref(), p.as_os_str()],
            "path-too-long",
        );
    }
    // The same for the env file and the rc file.
    for (flag, p) in [("--env-file", &long_name), ("--profile", &deep)] {
        let before = b.w.manifest();
        let (code, doc) = run_json(
            b.w.cmd_bare()
                .args(["migrate", "--yes", "--json", "--home"])
                .arg(home)
                .arg("--shared-dir")
                .arg(&b.w.shared)
                .arg(flag)
                .arg(p),
        );
        assert_eq!(code, 2, "{flag}: {doc:#}");
        assert_eq!(doc["error"]["kind"], "path-too-long", "{doc:#}");
        assert_same(&before, &b.w.manifest(), "a usage error changes nothing");
    }
}

// ---------------------------------------------------------------------------------------------
// Runs by the home's owner themselves
// ---------------------------------------------------------------------------------------------

/// The binary run as U, for U's own home (`HOME` set to it), with the world's path options.
fn as_owner(b: &Box, sub: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        format!("--reuid={}", b.u.uid),
        format!("--regid={}", b.u.gid),
        "--clear-groups".into(),
    ])
    .arg(BIN)
    .arg(sub)
    .args(b.w.path_args())
    .args(["--yes", "--no-env-file"])
    .env_clear()
    .env("PATH", "/usr/bin:/bin")
    .env("HOME", &b.w.home)
    .env("LANG", "C.UTF-8")
    .stdin(std::process::Stdio::null());
    c
}

/// U may keep its shared dir: made for them, 0755, so U's own run can create the config dir.
fn owner_shared_dir(b: &Box) {
    mkdir(&b.w.shared, 0o755);
    b.u.give(&b.w.shared);
}

#[test]
fn a_journal_the_owner_wrote_is_undone_by_the_owner_not_by_root() {
    let Some(b) = setup(false) else { return };
    owner_shared_dir(&b);
    let before = b.w.manifest();
    ok(&run(&mut as_owner(&b, "migrate")), "migrate as the owner");
    let j = std::fs::symlink_metadata(b.journal()).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&j), b.u.uid);
    // Root does not act on it (U could have written anything there)...
    let after = b.w.manifest();
    let r = run(&mut b.undo());
    untrusted(&r);
    assert!(
        r.stderr.contains("run the same command as that user"),
        "{}",
        r.stderr
    );
    assert_same(&after, &b.w.manifest(), "a refusal changes nothing");
    // ...but shows it, and U undoes their own migration.
    let mut st = b.w.cmd_sub("status");
    st.arg("--no-env-file");
    ok(&run(&mut st), "status as root");
    b.undo_restores(&before, as_owner(&b, "undo"));
}

#[test]
fn a_stow_style_home_migrated_by_its_owner_keeps_its_links() {
    let Some(b) = setup(false) else { return };
    owner_shared_dir(&b);
    let target = stow_bashrc(&b);
    let before = b.w.manifest();
    ok(&run(&mut as_owner(&b, "migrate")), "migrate as the owner");
    assert_link(&b.w.profile, Path::new("dotfiles/bashrc"));
    assert_eq!(mode_of(&target), 0o644);
    assert!(std::fs::read_to_string(&target)
        .unwrap()
        .contains("# >>> disinto-claude-init >>>"));
    assert_nothing_world_writable(&b);
    b.undo_restores(&before, as_owner(&b, "undo"));
}

// ---------------------------------------------------------------------------------------------
// undo's copy back and removal, across filesystems
// ---------------------------------------------------------------------------------------------

/// A cross-device world migrated by root, with `~/.claude/a/b/...` and `~/.claude/nest/sub/token`
/// (U's file, the size of `$R/nest/sub/token`) in the config dir afterwards.
fn migrated_cross_device() -> Option<Box> {
    let b = setup(true)?;
    for i in 0..5 {
        write_file(&b.w.claude().join(format!("a/b/f{i}")), b"mine\n", 0o644);
    }
    plant_u_token(&b);
    b.u.give(&b.w.claude());
    ok(&run(&mut b.migrate()), "migrate");
    Some(b)
}

fn restore_staging(b: &Box) -> PathBuf {
    let mut s = b.w.claude().into_os_string();
    s.push(".dci-restore");
    s.into()
}

#[test]
fn undo_copy_back_with_its_staging_and_source_swapped() {
    let Some(b) = migrated_cross_device() else {
        return;
    };
    let points = ["copy-data", "copy-meta"];
    let mut p = spawn_paused(&mut b.undo(), &points);
    assert!(p.reached("copy-data"), "undo never copied back");
    // The copy back goes into ~/.claude.dci-restore, in U's home: U puts its own tree there,
    // and points `nest` of the config dir (theirs) at $R/nest.
    let stash = b.w.home.join("restore.stash");
    if swap_staging_and_source(&b, &mut p, &restore_staging(&b), &b.w.config, &stash) {
        // And the staging dir itself for a link into root's tree before the metadata fixes.
        b.u.sh(&format!(
            "mv {rs} {home}/restore.stash2 && ln -s {etc} {rs}",
            rs = q(&restore_staging(&b)),
            home = q(&b.w.home),
            etc = q(&b.r.path("etc")),
        ));
    }
    let r = p.finish(&points);
    ended(&r);
    b.check();
}

#[test]
fn undo_removal_of_the_config_dir_does_not_follow_a_swapped_directory() {
    let Some(b) = migrated_cross_device() else {
        return;
    };
    // Depth 1 of the config dir's removal: `config/a` listed, `config/a/b` not opened yet.
    let aside = b.w.shared.join("a.orig");
    swapped_while_removed(&b, b.undo(), &b.w.config, &aside);
}
