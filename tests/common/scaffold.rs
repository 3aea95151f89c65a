//! Scaffolding that several test files share: worlds, where the journal lives, what a finished
//! migration leaves. Put a helper here (or in a new `tests/common/<name>.rs`) as soon as a
//! second test file needs it, rather than copying it.

use super::*;

/// `symlink_metadata` succeeds: the path exists, even as a dangling link.
pub fn exists(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}

/// The tool's state dir (journal, lock) for a world's home.
pub fn state_dir(w: &World) -> PathBuf {
    w.home.join(".local/state/disinto/claude-init")
}

impl World {
    /// `World::cross_device()` with `build_realistic_home`, `write_env_file` and
    /// `write_bashrc` done; None (the skip recorded) without a second file system.
    pub fn realistic_cross_device() -> Option<World> {
        let w = World::cross_device()?;
        build_realistic_home(&w.home);
        write_env_file(&w.env_file);
        write_bashrc(&w.profile);
        Some(w)
    }
}

/// The realistic home, env file and rc file, on one file system or (`cross`) across two.
pub fn world(cross: bool) -> Option<World> {
    if cross {
        World::realistic_cross_device()
    } else {
        Some(World::realistic())
    }
}

/// A fixture home (`fixtures/<name>`) with the standard env file written.
pub fn fixture_with_env(name: &str) -> World {
    let w = load_fixture(name);
    write_env_file(&w.env_file);
    w
}

/// The config dir holds exactly what `~/.claude` held (`claude_before`), plus `.claude.json`
/// (a 0600 file); its own root entry aside. Returns the config dir's manifest.
#[track_caller]
pub fn assert_config_holds(claude_before: &Manifest, config: &Path, what: &str) -> Manifest {
    let mut m = manifest(config);
    let moved = m
        .remove(&b".claude.json"[..])
        .unwrap_or_else(|| panic!("{what}: ~/.claude.json not in the config dir"));
    assert_eq!(moved.kind, Kind::File, "{what}");
    assert_eq!(moved.mode, 0o600, "{what}");
    assert_same_except(
        claude_before,
        &m,
        Ignore {
            root: true,
            ..Default::default()
        },
        &format!("{what}: config dir vs the old ~/.claude"),
    );
    m
}

/// What a finished migration must leave, against what the home held before.
#[track_caller]
pub fn assert_migrated(w: &World, claude_before: &Manifest, json_before: &[u8], what: &str) {
    let config = assert_config_holds(claude_before, &w.config, what);
    let (b, a) = (&claude_before[&b"."[..]], &config[&b"."[..]]);
    assert_eq!(a.mode, 0o700, "{what}: config dir mode");
    assert_eq!(
        a.mtime, b.mtime,
        "{what}: config dir keeps ~/.claude's mtime"
    );
    assert_eq!(
        fs::read(w.config.join(".claude.json")).unwrap(),
        json_before,
        "{what}: .claude.json bytes"
    );
    assert_eq!(
        fs::read_link(w.claude()).unwrap(),
        w.config,
        "{what}: ~/.claude link"
    );
    assert_eq!(
        fs::read_link(w.claude_json()).unwrap(),
        w.config.join(".claude.json"),
        "{what}: ~/.claude.json link"
    );
    let env = fs::read_to_string(&w.env_file).unwrap();
    assert!(
        env.contains(&format!("\nCLAUDE_CONFIG_DIR={}\n", w.config.display())),
        "{what}: env file:\n{env}"
    );
    assert_eq!(
        env.matches("CLAUDE_SHARED_DIR=").count(),
        1,
        "{what}: env file:\n{env}"
    );
    let rc = fs::read_to_string(&w.profile).unwrap();
    assert_eq!(
        rc.matches(">>> disinto-claude-init >>>").count(),
        1,
        "{what}: rc file:\n{rc}"
    );
    assert!(rc.starts_with(BASHRC_CONTENT), "{what}: rc file:\n{rc}");
    assert!(
        state_dir(w).join("journal.json").is_file(),
        "{what}: the journal stays for undo"
    );
    let r = run(w.cmd_sub("verify").arg("--json"));
    assert_eq!(r.code, 0, "{what}: verify:\n{}\n{}", r.stdout, r.stderr);
}
