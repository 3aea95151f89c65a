//! Real homes and the real factory (issue 11, items 1-6), driven through the real binary on
//! real filesystems, with full manifests of the world before and after:
//!
//! 1. relative links that leave `~/.claude` keep reaching the same inode (one filesystem and
//!    across two), the plan and the journal list them, `undo` restores their text;
//! 2. loose credentials are made 0600 (undo puts the mode back);
//! 3. `~/.claude.json` on a fresh host, and Docker's empty root-owned directory there;
//! 4. `migrate` and `verify` agree on every fixture layout and every state above;
//! 5. Claude Code's `.oauth_refresh.lock`, fresh (refused, naming the pid) or stale (not);
//! 6. `--agent-uid` / `DISINTO_AGENT_UID`;
//!
//! and `disinto init`'s order (compose first, credentials 0644) ending in exit 0 twice.

mod common;

use common::homes::*;
use common::*;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;

use common::homes::{expect, migrate, undo, verify};

/// The absolute text a leaving link gets: the home's physical path, then what follows the
/// `..` that leaves `~/.claude`, byte for byte.
fn expected_new(w: &World, text: &str, depth: usize) -> String {
    let mut rest = text;
    let mut ups = 0;
    // The tests' texts: optional "./", then `depth + 1` times "../".
    rest = rest.strip_prefix("./").unwrap_or(rest);
    while ups <= depth {
        rest = rest.strip_prefix("../").expect("a leaving text");
        ups += 1;
    }
    format!(
        "{}/{rest}",
        std::fs::canonicalize(&w.home).unwrap().display()
    )
}

fn leaving(w: &World) -> Vec<(&'static str, &'static str, String)> {
    STOW_LINKS[..STOW_LEAVING]
        .iter()
        .map(|(p, t)| (*p, *t, expected_new(w, t, p.matches('/').count())))
        .collect()
}

fn stow_round_trip(w: World) {
    build_stow_home(&w);
    write_env_file(&w.env_file);
    let before = w.manifest();
    let res_before = stow_resolutions(&w.claude());
    assert!(
        res_before[..STOW_LEAVING].iter().all(|(_, r)| r.is_some()),
        "the fixture's leaving links resolve before: {res_before:?}"
    );

    // The plan names every rewritten link, old text and new; the inside ones not at all.
    let plan = run(w.cmd().arg("--dry-run"));
    expect(&plan, 0, "dry run");
    assert!(plan.stdout.contains("rewrite-links"), "{}", plan.stdout);
    for (p, old, new) in leaving(&w) {
        let line = format!("{p}: {old} => {new}");
        assert!(
            plan.stdout.contains(&line),
            "plan lacks {line}:\n{}",
            plan.stdout
        );
    }
    for (p, _) in &STOW_LINKS[STOW_LEAVING..] {
        assert!(
            !plan.stdout.contains(&format!("{p}: ")),
            "{p} is not rewritten"
        );
    }
    assert_same(&before, &w.manifest(), "a dry run changes nothing");

    let r = migrate(&w);
    expect(&r, 0, "migrate");
    // Links that leave the tree (and the absolute one) reach the very same inode; links inside
    // reach their file in the moved tree (the same inode on one filesystem, its verified copy
    // across two).
    let inside = |r: &[(String, Option<(u64, u64)>)]| -> Vec<(String, bool)> {
        r[STOW_LEAVING..STOW_LINKS.len()]
            .iter()
            .map(|(p, x)| (p.clone(), x.is_some()))
            .collect()
    };
    for via in [w.config.clone(), w.claude()] {
        let after = stow_resolutions(&via);
        assert_eq!(
            after[..STOW_LEAVING],
            res_before[..STOW_LEAVING],
            "leaving, via {via:?}"
        );
        assert_eq!(after.last(), res_before.last(), "absolute, via {via:?}");
        assert_eq!(inside(&after), inside(&res_before), "inside, via {via:?}");
    }
    assert_eq!(
        resolved(&w.config.join("local/node_modules/.bin/claude")),
        resolved(
            &w.config
                .join("local/node_modules/@anthropic-ai/claude-code/cli.js")
        ),
    );
    for (p, _, new) in leaving(&w) {
        assert_eq!(link_target(&w.config.join(p)), new.as_bytes(), "{p}");
    }
    for (p, t) in &STOW_LINKS[STOW_LEAVING..] {
        assert_eq!(
            link_target(&w.config.join(p)),
            t.as_bytes(),
            "{p} kept byte for byte"
        );
    }
    // The rewritten link keeps its owner and mtime, its directory its mtime.
    let b = &before;
    let key = |rel: &str| -> Vec<u8> {
        let home_rel = w
            .home
            .strip_prefix(&w.root)
            .unwrap()
            .join(".claude")
            .join(rel);
        [b"tmp/".as_slice(), home_rel.as_os_str().as_bytes()].concat()
    };
    let m = std::fs::symlink_metadata(w.config.join("agents/reviewer.md")).unwrap();
    let was = &b[&key("agents/reviewer.md")];
    assert_eq!((m.mtime(), m.mtime_nsec()), was.mtime, "link mtime kept");
    assert_eq!((m.uid(), m.gid()), (was.uid, was.gid), "link owner kept");
    assert_eq!(
        mtime_of(&w.config.join("agents")),
        b[&key("agents")].mtime,
        "the link's directory keeps its mtime"
    );

    // The journal records both texts.
    let j = journal_text(&w);
    assert!(j.contains("\"rewrite-links\""), "{j}");
    for (_, old, new) in leaving(&w) {
        assert!(
            j.contains(old) && j.contains(&new),
            "journal lacks {old} / {new}"
        );
    }

    // verify: healthy, naming the links containers cannot follow and the dangling one.
    let v = verify(&w);
    expect(&v, 0, "verify after migrate");
    for (p, _, _) in leaving(&w) {
        let shown = w.config.join(p);
        assert!(
            v.stderr
                .contains(&format!("the link '{}'", shown.display()))
                && v.stderr.contains("outside the shared dir"),
            "verify names {p}:\n{}",
            v.stderr
        );
    }
    assert!(
        v.stderr.contains(&format!(
            "the link '{}' -> 'gone-session.json' resolves to nothing",
            w.config.join("todos/latest.json").display()
        )),
        "{}",
        v.stderr
    );
    assert!(
        !v.stderr.contains("node_modules/.bin/claude"),
        "a link resolving inside is fine: {}",
        v.stderr
    );
    // A second run changes nothing.
    let mid = w.manifest();
    expect(&migrate(&w), 0, "second run");
    assert_same(&mid, &w.manifest(), "a second run");

    let u = undo(&w);
    expect(&u, 0, "undo");
    assert_same(
        &before,
        &w.manifest(),
        "undo restores every link's text byte for byte",
    );
}

#[test]
fn stow_links_keep_reaching_the_same_files_by_rename() {
    stow_round_trip(World::new());
}

#[test]
fn stow_links_keep_reaching_the_same_files_across_filesystems() {
    let Some(w) = World::cross_device() else {
        panic!("this machine must give two filesystems (/tmp and /dev/shm) for this test");
    };
    stow_round_trip(w);
}

#[test]
fn a_link_changed_after_the_migration_stops_undo_before_anything_changes() {
    let w = World::new();
    build_stow_home(&w);
    expect(&migrate(&w), 0, "migrate");
    let l = w.config.join("CLAUDE.md");
    std::fs::remove_file(&l).unwrap();
    ln_s("/somewhere/else", &l);
    let mid = w.manifest();
    let u = undo(&w);
    expect(&u, 3, "undo over a changed link");
    assert!(u.stderr.contains("CLAUDE.md"), "{}", u.stderr);
    assert_same(&mid, &w.manifest(), "a refused undo changes nothing");
}

#[test]
fn loose_credentials_are_made_0600_and_undo_puts_the_mode_back() {
    for world in [Some(World::new()), World::cross_device()] {
        let w = world.expect("two filesystems");
        build_stow_home(&w);
        set_mode(&w.claude().join(".credentials.json"), 0o644);
        let before = w.manifest();
        let plan = run(w.cmd().arg("--dry-run"));
        assert!(
            plan.stdout.contains("secure-credentials"),
            "{}",
            plan.stdout
        );
        expect(&migrate(&w), 0, "migrate with 0644 credentials");
        assert_eq!(mode_of(&w.config.join(".credentials.json")), 0o600);
        expect(&verify(&w), 0, "verify");
        expect(&undo(&w), 0, "undo");
        assert_same(&before, &w.manifest(), "undo puts 0644 back");
    }
}

#[test]
fn credentials_of_an_adopted_config_dir_are_secured_too() {
    let w = load_fixture("adopt");
    write_file(&w.config.join(".credentials.json"), b"{}", 0o664);
    let before = w.manifest();
    expect(&verify(&w), 5, "verify before");
    expect(&migrate(&w), 0, "migrate");
    assert_eq!(mode_of(&w.config.join(".credentials.json")), 0o600);
    expect(&undo(&w), 0, "undo");
    assert_same(&before, &w.manifest(), "undo");
}

#[test]
fn a_fresh_host_gets_an_empty_claude_json_linked_from_home() {
    let w = load_fixture("fresh");
    let before = w.manifest();
    let r = migrate(&w);
    expect(&r, 0, "migrate");
    let f = w.config.join(".claude.json");
    assert_eq!(std::fs::read(&f).unwrap(), b"{}");
    assert_eq!(mode_of(&f), 0o600);
    let home_owner = std::fs::metadata(&w.home).unwrap().uid();
    assert_eq!(std::fs::metadata(&f).unwrap().uid(), home_owner);
    assert_eq!(link_target(&w.claude_json()), f.as_os_str().as_bytes());
    expect(&verify(&w), 0, "verify");
    expect(&undo(&w), 0, "undo");
    assert_same(&before, &w.manifest(), "undo");
}

#[test]
fn dockers_empty_root_owned_directory_is_replaced_by_the_link_and_undo_puts_it_back() {
    let w = World::new();
    build_stow_home(&w);
    std::fs::remove_file(w.claude_json()).unwrap();
    if is_root() {
        chown_r(&w.home, AGENT_UID, AGENT_UID);
    }
    docker_claude_json_dir(&w);
    let before = w.manifest();
    let plan = run(w.cmd().arg("--dry-run"));
    expect(&plan, 0, "dry run");
    assert!(
        plan.stdout.contains("remove-empty-claude-json-dir")
            && plan.stdout.contains("create-claude-json"),
        "{}",
        plan.stdout
    );
    expect(&migrate(&w), 0, "migrate over Docker's directory");
    assert!(std::fs::symlink_metadata(w.claude_json())
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(w.claude_json()).unwrap(), b"{}");
    expect(&verify(&w), 0, "verify");
    expect(&undo(&w), 0, "undo");
    // The empty directory is back with its owner (root), mode and mtime: the manifest says so.
    assert_same(&before, &w.manifest(), "undo");
}

#[test]
fn a_non_empty_directory_or_a_fifo_at_claude_json_stays_a_refusal() {
    for what in ["dir", "fifo"] {
        let w = World::new();
        build_stow_home(&w);
        std::fs::remove_file(w.claude_json()).unwrap();
        match what {
            "dir" => write_file(&w.claude_json().join("x"), b"", 0o644),
            _ => nix::unistd::mkfifo(
                &w.claude_json(),
                nix::sys::stat::Mode::from_bits(0o644).unwrap(),
            )
            .unwrap(),
        }
        let before = w.manifest();
        let r = migrate(&w);
        expect(&r, 3, what);
        assert!(r.stderr.contains(".claude.json"), "{}", r.stderr);
        assert_same(&before, &w.manifest(), "a refusal changes nothing");
        expect(&verify(&w), 5, "verify agrees");
    }
}

/// Every state of this issue and every fixture layout, built fresh each time.
/// A named state and how to build it (None: the machine lacks a second filesystem).
type State = (String, Box<dyn Fn() -> Option<World>>);

fn states() -> Vec<State> {
    let mut v: Vec<State> = Vec::new();
    for name in FIXTURES {
        v.push((
            format!("fixture {name}"),
            Box::new(move || Some(load_fixture(name))),
        ));
    }
    v.push((
        "stow".into(),
        Box::new(|| {
            let w = World::new();
            build_stow_home(&w);
            Some(w)
        }),
    ));
    v.push((
        "stow across filesystems".into(),
        Box::new(|| {
            let w = World::cross_device()?;
            build_stow_home(&w);
            Some(w)
        }),
    ));
    v.push((
        "credentials 0644".into(),
        Box::new(|| {
            let w = load_fixture("legacy");
            write_file(&w.claude().join(".credentials.json"), b"{}", 0o644);
            Some(w)
        }),
    ));
    v.push((
        "migrated, credentials 0644".into(),
        Box::new(|| {
            let w = load_fixture("migrated");
            write_file(&w.config.join(".credentials.json"), b"{}", 0o644);
            Some(w)
        }),
    ));
    v.push((
        "migrated, no ~/.claude.json".into(),
        Box::new(|| {
            let w = load_fixture("migrated");
            std::fs::remove_file(w.claude_json()).unwrap();
            Some(w)
        }),
    ));
    v.push((
        "migrated, Docker's directory".into(),
        Box::new(|| {
            let w = load_fixture("migrated");
            std::fs::remove_file(w.claude_json()).unwrap();
            docker_claude_json_dir(&w);
            Some(w)
        }),
    ));
    v.push((
        "migrated, link to a missing .claude.json".into(),
        Box::new(|| {
            let w = load_fixture("migrated");
            std::fs::remove_file(w.config.join(".claude.json")).unwrap();
            Some(w)
        }),
    ));
    v.push((
        "legacy, Docker's directory".into(),
        Box::new(|| {
            let w = load_fixture("legacy");
            let _ = std::fs::remove_file(w.claude_json());
            docker_claude_json_dir(&w);
            Some(w)
        }),
    ));
    v.push((
        "fresh, Docker's directory".into(),
        Box::new(|| {
            let w = load_fixture("fresh");
            docker_claude_json_dir(&w);
            Some(w)
        }),
    ));
    v.push((
        "stow, migrated by an earlier run".into(),
        Box::new(|| {
            let w = World::new();
            build_stow_home(&w);
            write_env_file(&w.env_file);
            write_bashrc(&w.profile);
            expect(&migrate(&w), 0, "the earlier run");
            Some(w)
        }),
    ));
    v.push((
        "stale OAuth lock".into(),
        Box::new(|| {
            let w = load_fixture("legacy");
            oauth_lock(&w.claude(), 3600, Some(std::process::id()));
            Some(w)
        }),
    ));
    v
}

#[test]
fn migrate_and_verify_agree_on_every_layout_and_state() {
    // Each state twice: with a stale env file and rc file (everything to do), and with both
    // left out (`--no-env-file --no-modify-profile`), so that the home's own state alone
    // decides what verify says and what migrate does.
    let mut checked = 0;
    let mut healthy_before = 0;
    for files in [true, false] {
        let extra: &[&str] = if files {
            &[]
        } else {
            &["--no-env-file", "--no-modify-profile"]
        };
        for (name, make) in states() {
            let name = format!("{name} (env and rc files: {files})");
            let w =
                make().unwrap_or_else(|| panic!("{name}: this machine must give two filesystems"));
            if files && !w.env_file.exists() {
                write_env_file(&w.env_file);
                write_bashrc(&w.profile);
            }
            let verify = || run(w.cmd_sub("verify").args(extra));
            let migrate = || run(w.cmd().arg("--yes").args(extra));
            // verify 0 => migrate changes nothing.
            let v = verify();
            assert!(
                v.code == 0 || v.code == 5,
                "{name}: verify exit {}: {}",
                v.code,
                v.stderr
            );
            if v.code == 0 {
                healthy_before += 1;
                let before = w.manifest();
                let m = migrate();
                expect(&m, 0, &format!("{name}: migrate on a healthy layout"));
                assert_same(
                    &before,
                    &w.manifest(),
                    &format!("{name}: healthy, so migrate changes nothing"),
                );
            }
            // migrate 0 => verify 0, and then migrate changes nothing.
            let m = migrate();
            if m.code == 0 {
                expect(
                    &verify(),
                    0,
                    &format!("{name}: migrate said 0, so verify says 0"),
                );
                let mid = w.manifest();
                expect(&migrate(), 0, &format!("{name}: rerun"));
                assert_same(
                    &mid,
                    &w.manifest(),
                    &format!("{name}: rerun changes nothing"),
                );
            } else {
                assert_eq!(m.code, 3, "{name}: refused, not failed: {}", m.stderr);
                expect(
                    &verify(),
                    5,
                    &format!("{name}: refused, so verify is not healthy"),
                );
            }
            checked += 1;
        }
    }
    assert_eq!(
        checked,
        2 * (FIXTURES.len() + 11),
        "every state was checked"
    );
    assert!(
        healthy_before >= 2,
        "the healthy branch ran ({healthy_before})"
    );
}

#[test]
fn a_fresh_oauth_refresh_lock_refuses_naming_the_process_and_a_stale_one_does_not() {
    // In ~/.claude, held by a live process of this host (this test).
    let w = load_fixture("legacy");
    oauth_lock(&w.claude(), 0, Some(std::process::id()));
    let before = w.manifest();
    let r = migrate(&w);
    expect(&r, 3, "fresh lock in ~/.claude");
    let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
    assert!(
        r.stderr.contains(".oauth_refresh.lock")
            && r.stderr
                .contains(&format!("PID {} ({})", std::process::id(), comm.trim())),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("60 s"),
        "the fix text describes the locks: {}",
        r.stderr
    );
    assert_same(&before, &w.manifest(), "a refusal changes nothing");

    // In the config dir (adopt: the config dir exists, ~/.claude is to be linked), no owner file.
    let w = load_fixture("adopt");
    oauth_lock(&w.config, 5, None);
    let r = migrate(&w);
    expect(&r, 3, "fresh lock in the config dir");
    assert!(
        r.stderr
            .contains(&w.config.join(".oauth_refresh.lock").display().to_string()),
        "{}",
        r.stderr
    );

    // Stale (61 s: proper-lockfile's 60 s rule, as Claude 2.1.332 sets it): not a refusal.
    let w = load_fixture("legacy");
    oauth_lock(&w.claude(), 61, Some(std::process::id()));
    expect(&migrate(&w), 0, "stale lock");
}

#[test]
fn agent_uid_turns_an_unreachable_config_dir_into_a_problem() {
    if !is_root() {
        panic!("this test needs root (it makes homes owned by uid {AGENT_UID} and by root)");
    }
    // A home owned by root (a VPS's /root): the agents (1000) cannot read the credentials.
    let w = World::new();
    build_stow_home(&w);
    chown_r(&w.home, 0, 0);
    let r = run(w.cmd().arg("--yes").arg("--agent-uid").arg("1000"));
    expect(&r, 5, "--agent-uid 1000 on a root-owned config");
    assert!(
        r.stderr.contains("uid 1000") && r.stderr.contains("uid 0") && r.stderr.contains("fix:"),
        "{}",
        r.stderr
    );
    // The same through the environment.
    let r = run(w.cmd_sub("verify").env("DISINTO_AGENT_UID", "1000"));
    expect(&r, 5, "DISINTO_AGENT_UID=1000");
    // Without it: today's warning, exit 0.
    let r = verify(&w);
    expect(&r, 0, "no --agent-uid");
    assert!(
        r.stderr.contains("warning:") && r.stderr.contains("uid 1000"),
        "{}",
        r.stderr
    );

    // A home owned by the agents' uid passes.
    let w = World::new();
    build_stow_home(&w);
    chown_r(&w.home, AGENT_UID, AGENT_UID);
    let r = run(w.cmd().arg("--yes").arg("--agent-uid").arg("1000"));
    expect(&r, 0, "home owned by 1000");
    let r = run(w.cmd_sub("verify").arg("--agent-uid").arg("1000"));
    expect(&r, 0, "verify --agent-uid 1000");
}

/// `disinto init`'s order: compose comes up first (Docker leaves a root-owned empty directory
/// at `~/.claude.json`), and the smoke test's credentials fixture is 0644; then the migration
/// as init calls it, then verify. Both exit 0.
#[test]
fn disinto_init_order_compose_first_and_loose_credentials_ends_healthy() {
    let w = World::new();
    let c = w.claude();
    write_file(
        &c.join(".credentials.json"),
        b"{\"claudeAiOauth\":{\"accessToken\":\"t\"}}",
        0o644,
    );
    write_file(&c.join("settings.json"), b"{}", 0o644);
    set_mode(&c, 0o755);
    if is_root() {
        chown_r(&w.home, AGENT_UID, AGENT_UID);
    }
    docker_claude_json_dir(&w);
    write_env_file(&w.env_file);
    let before = w.manifest();
    let mut cmd = w.cmd_bare();
    cmd.args(["--yes", "--env-file"])
        .arg(&w.env_file)
        .args(["--home"])
        .arg(&w.home)
        .args(["--shared-dir"])
        .arg(&w.shared)
        .args(["--agent-uid", "1000", "--profile"])
        .arg(&w.profile);
    let r = run(&mut cmd);
    expect(&r, 0, "init's migration");
    let r = run(w.cmd_sub("verify").args(["--agent-uid", "1000"]));
    expect(&r, 0, "verify");
    assert_eq!(mode_of(&w.config.join(".credentials.json")), 0o600);
    expect(&undo(&w), 0, "undo");
    assert_same(&before, &w.manifest(), "undo");
}

/// A SIGKILL at either edge of each new step (the `failpoints` feature), on the stow home
/// with loose credentials and Docker's directory: `undo` then restores the world exactly, and
/// (on a second world) `migrate` finishes the run, which `verify` calls healthy.
#[test]
fn killed_at_each_new_step_undo_restores_and_migrate_finishes() {
    use std::os::unix::process::ExitStatusExt;
    let points = [
        "apply-rewrite-links",
        "applied-rewrite-links",
        "applied-secure-credentials",
        "applied-remove-empty-claude-json-dir",
        "apply-create-claude-json",
        "applied-create-claude-json",
    ];
    for fp in points {
        for finish in [false, true] {
            let w = World::new();
            build_stow_home(&w);
            std::fs::remove_file(w.claude_json()).unwrap();
            set_mode(&w.claude().join(".credentials.json"), 0o640);
            docker_claude_json_dir(&w);
            write_env_file(&w.env_file);
            let before = w.manifest();
            let out = w
                .cmd()
                .arg("--yes")
                .env("DCI_FAILPOINTS", format!("{fp}=kill"))
                .output()
                .unwrap();
            assert_eq!(out.status.signal(), Some(9), "{fp}: not killed: {out:?}");
            if finish {
                expect(&migrate(&w), 0, &format!("{fp}: resumed"));
                expect(&verify(&w), 0, &format!("{fp}: verify after resuming"));
                let dot = w.home.join("dotfiles/claude");
                let want: Vec<_> = [
                    "CLAUDE.md",
                    "commands",
                    "agents/reviewer.md",
                    "settings.local.json",
                ]
                .iter()
                .map(|p| resolved(&dot.join(p)))
                .collect();
                let got: Vec<_> = stow_resolutions(&w.config)[..STOW_LEAVING]
                    .iter()
                    .map(|(_, r)| *r)
                    .collect();
                assert_eq!(got, want, "{fp}: the leaving links reach the dotfiles");
                expect(&undo(&w), 0, &format!("{fp}: undo after resuming"));
            } else {
                expect(&undo(&w), 0, &format!("{fp}: undo of the interrupted run"));
            }
            assert_same(&before, &w.manifest(), &format!("{fp} (finish: {finish})"));
        }
    }
}

/// `claude ARGS` (the real Claude Code) as the home's user, with `CLAUDE_CONFIG_DIR` or not,
/// nothing that could reach the network on.
fn claude(bin: &std::path::Path, w: &World, cfg: bool, args: &[&str]) -> Run {
    let mut c = common::npm::offline_claude(bin, &w.home, args);
    if cfg {
        c.env("CLAUDE_CONFIG_DIR", &w.config);
    }
    let r = run(&mut c);
    expect(
        &r,
        0,
        &format!("claude {args:?} (CLAUDE_CONFIG_DIR: {cfg})"),
    );
    r
}

/// The `{}` the tool creates over Docker's directory is what Claude Code (2.1.197, from the npm
/// registry, cached under target/) then uses: `mcp list` reads it with and without
/// `CLAUDE_CONFIG_DIR`, `mcp add -s user` without the variable writes through the link (which
/// stays a link), and the server is seen with the variable; `verify` stays healthy after.
#[test]
fn real_claude_code_uses_the_claude_json_created_over_dockers_directory() {
    if !common::npm::require_real_clients("Claude Code") {
        return;
    }
    let bin = common::npm::install("@anthropic-ai/claude-code", "2.1.197").bin("claude");
    let w = World::new();
    build_stow_home(&w);
    std::fs::remove_file(w.claude_json()).unwrap();
    docker_claude_json_dir(&w);
    write_env_file(&w.env_file);
    expect(&migrate(&w), 0, "migrate");
    let file = w.config.join(".claude.json");
    assert_eq!(std::fs::read(&file).unwrap(), b"{}");
    for cfg in [true, false] {
        let l = claude(&bin, &w, cfg, &["mcp", "list"]).stdout;
        assert!(l.contains("No MCP servers"), "{l}");
    }
    claude(
        &bin,
        &w,
        false,
        &["mcp", "add", "-s", "user", "dci", "--", "/bin/true"],
    );
    assert!(std::fs::symlink_metadata(w.claude_json())
        .unwrap()
        .file_type()
        .is_symlink());
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(json["mcpServers"]["dci"]["command"], "/bin/true", "{json}");
    let l = claude(&bin, &w, true, &["mcp", "get", "dci"]).stdout;
    assert!(l.contains("/bin/true"), "{l}");
    expect(&verify(&w), 0, "verify after Claude wrote its config");
    // Undo would delete what Claude wrote there: refused before anything changes.
    let mid = w.manifest();
    let u = undo(&w);
    expect(&u, 3, "undo after Claude wrote to the created file");
    assert!(u.stderr.contains(".claude.json"), "{}", u.stderr);
    assert_same(&mid, &w.manifest(), "a refused undo changes nothing");
}

/// A SIGKILL (strace injects it) in the one window `rewrite-links` cannot make atomic: after the
/// new link is renamed into place, before its directory's mtime is set back. The resumed run,
/// and the undo, both put the planned mtime back: the world ends exactly as before.
#[test]
fn killed_between_a_link_swap_and_its_directory_mtime_nothing_is_left_wrong() {
    assert!(have_strace(), "strace is needed (.ci/run installs it)");
    for finish in [true, false] {
        let w = World::new();
        build_stow_home(&w);
        write_env_file(&w.env_file);
        let before = w.manifest();
        let agents = w.config.join("agents");
        // In <config>/agents: utimensat #1 gives the temp link the old link's times, #2 is the
        // directory's own mtime, right after the rename.
        let trace_dir = tempfile::tempdir().unwrap();
        let trace = trace_dir.path().join("strace.out");
        let mut cmd = w.cmd();
        cmd.arg("--yes");
        let filter = vec![
            "-P".to_string(),
            agents.display().to_string(),
            "-e".into(),
            "trace=utimensat".into(),
            "-e".into(),
            "inject=utimensat:signal=SIGKILL:when=2".into(),
        ];
        let out = straced(&cmd, &trace, &filter).output().unwrap();
        assert!(!out.status.success(), "killed: {out:?}");
        let t = std::fs::read_to_string(&trace).unwrap();
        assert!(t.contains("+++ killed by SIGKILL"), "{t}");
        // The link is already the new one; nothing else has run after it.
        assert!(link_target(&agents.join("reviewer.md")).starts_with(b"/"));
        if finish {
            expect(&migrate(&w), 0, "resumed");
            let key = [
                b"tmp/".as_slice(),
                w.home
                    .strip_prefix(&w.root)
                    .unwrap()
                    .join(".claude/agents")
                    .as_os_str()
                    .as_bytes(),
            ]
            .concat();
            assert_eq!(
                mtime_of(&agents),
                before[&key].mtime,
                "the resumed run set it back"
            );
        }
        expect(&undo(&w), 0, "undo");
        assert_same(
            &before,
            &w.manifest(),
            &format!("killed in the window (finish: {finish})"),
        );
    }
}
