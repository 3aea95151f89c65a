//! The unit tests of `settings`: resolution, path checks, system directories, lengths.

use super::*;

fn env_for(home: &Path) -> ProcessEnv {
    ProcessEnv {
        home: Some(home.into()),
        cwd: home.into(),
        euid: 4242,
        ..Default::default()
    }
}

#[test]
fn precedence_flag_then_file_then_default() {
    let t = tempfile::tempdir().unwrap();
    let envf = t.path().join(".env");
    std::fs::write(
        &envf,
        "CLAUDE_SHARED_DIR=/srv/shared\nCLAUDE_CONFIG_DIR=${CLAUDE_SHARED_DIR}/cfg\n",
    )
    .unwrap();
    let mut req = Requested {
        env_file: Some(envf.clone()),
        ..Default::default()
    };
    let s = resolve(&req, &env_for(t.path())).unwrap();
    assert_eq!(s.shared_dir, Path::new("/srv/shared"));
    assert_eq!(s.config_dir, Path::new("/srv/shared/cfg"));
    req.shared_dir = Some("/flag/shared".into());
    let s = resolve(&req, &env_for(t.path())).unwrap();
    assert_eq!(s.shared_dir, Path::new("/flag/shared"));
    assert_eq!(s.config_dir, Path::new("/flag/shared/config"));
    req.no_env_file = true;
    req.env_file = None;
    req.shared_dir = None;
    let s = resolve(&req, &env_for(t.path())).unwrap();
    assert_eq!(s.shared_dir, Path::new(DEFAULT_SHARED_DIR));
    assert_eq!(s.env_file, None);
}

#[test]
fn relative_and_overlapping_paths_are_usage_errors() {
    let t = tempfile::tempdir().unwrap();
    let req = Requested {
        shared_dir: Some("rel/dir".into()),
        no_env_file: true,
        ..Default::default()
    };
    assert_eq!(
        resolve(&req, &env_for(t.path())).unwrap_err().exit,
        crate::error::ExitCode::Usage
    );
    let req = Requested {
        shared_dir: Some(t.path().join(".claude/x")),
        no_env_file: true,
        ..Default::default()
    };
    assert_eq!(
        resolve(&req, &env_for(t.path())).unwrap_err().kind.as_str(),
        "overlapping-paths"
    );
}

#[test]
fn system_directories_are_not_homes_but_service_homes_and_root_s_are() {
    for p in [
        "/",
        "/etc",
        "/etc/ssh",
        "/usr",
        "/usr/games",
        "/var",
        "/var/lib",
        "/proc/1",
        "/sys",
        "/run/sshd",
        "/lib64",
        "/home",
    ] {
        assert!(is_system_dir(Path::new(p)), "{p}");
    }
    for p in [
        "/root",
        "/home/alice",
        "/var/lib/jenkins",
        "/srv/factory",
        "/opt/disinto/home",
        "/etcetera",
        "/usr2",
    ] {
        assert!(!is_system_dir(Path::new(p)), "{p}");
    }
}

#[test]
fn lengths_leave_room_for_the_derived_names() {
    let ok = Path::new("/tmp").join("a".repeat(200));
    assert!(check_length("shared dir", "--shared-dir", &ok).is_ok());
    let tight = Path::new("/tmp").join("a".repeat(230));
    assert_eq!(
        check_length("shared dir", "--shared-dir", &tight)
            .unwrap_err()
            .kind
            .as_str(),
        "path-too-long"
    );
    // A long name is fine above the last component (nothing is appended to it)...
    let mid = Path::new("/tmp").join("b".repeat(250)).join("c");
    assert!(check_length("shared dir", "--shared-dir", &mid).is_ok());
    // ...but not beyond the filesystem's limit.
    let over = Path::new("/tmp").join("b".repeat(256)).join("c");
    assert!(check_length("shared dir", "--shared-dir", &over).is_err());
    let deep = Path::new("/").join(["d"; 2100].join("/"));
    assert!(check_length("shared dir", "--shared-dir", &deep).is_err());
}

#[test]
fn state_dir_ignores_xdg_of_another_user() {
    let t = tempfile::tempdir().unwrap();
    let mut env = env_for(t.path());
    env.xdg_state_home = Some("/elsewhere/state".into());
    let req = Requested {
        no_env_file: true,
        ..Default::default()
    };
    // euid 4242 is not the owner of the temp home: XDG_STATE_HOME is not theirs.
    let s = resolve(&req, &env).unwrap();
    assert_eq!(
        s.state_dir,
        t.path().join(".local/state/disinto/claude-init")
    );
    env.euid = s.owner.uid;
    let s = resolve(&req, &env).unwrap();
    assert_eq!(
        s.state_dir,
        Path::new("/elsewhere/state/disinto/claude-init")
    );
}
