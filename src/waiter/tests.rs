use super::*;

#[test]
fn proc_locks_lines() {
    assert_eq!(
        parse_proc_locks_line("1: FLOCK  ADVISORY  WRITE 4242 fe:00:1234567 0 EOF"),
        Some(LockLine {
            flock: true,
            blocked: false,
            pid: 4242,
            major: 0xfe,
            minor: 0,
            ino: 1234567
        })
    );
    let w = parse_proc_locks_line("1: -> FLOCK  ADVISORY  WRITE 4343 00:1b:99 0 EOF").unwrap();
    assert!(w.blocked && w.flock);
    assert_eq!((w.pid, w.major, w.minor, w.ino), (4343, 0, 0x1b, 99));
    let p = parse_proc_locks_line("2: POSIX  ADVISORY  READ 17 08:01:5 0 EOF").unwrap();
    assert!(!p.flock);
    assert_eq!(parse_proc_locks_line("garbage"), None);
}

#[test]
fn refresh_lock_paths() {
    let v = refresh_locks(Path::new("/h"), Path::new("/s/config"));
    let want: Vec<PathBuf> = [
        "/h/.claude.lock",
        "/h/.claude/.oauth_refresh.lock",
        "/s/config.lock",
        "/s/config/.oauth_refresh.lock",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    assert_eq!(v, want);
    // The config dir still ~/.claude (CLAUDE_CONFIG_DIR unset): no duplicates.
    assert_eq!(
        refresh_locks(Path::new("/h"), Path::new("/h/.claude")).len(),
        2
    );
}

#[test]
fn busy_says_who() {
    let b = Busy::SessionLock {
        path: "/h/.claude/session.lock".into(),
        holders: vec![Proc {
            pid: 4242,
            comm: "claude".into(),
            cmdline: "claude -p hi".into(),
        }],
        queued: 2,
    };
    assert_eq!(
        b.to_string(),
        "the agent holding session.lock (pid 4242 claude)"
    );
    let e = WaitError::Timeout {
        waited: Duration::from_secs(600),
        busy: vec![b],
    }
    .to_error("disinto-claude-init --yes --wait 1800");
    assert_eq!(e.exit, crate::error::ExitCode::Refused);
    assert_eq!(e.kind.as_str(), "wait-timeout");
    assert!(
        e.message.contains("pid 4242 (claude -p hi)"),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("2 more process(es) queued"),
        "{}",
        e.message
    );
    assert!(e.message.contains("Nothing was changed"), "{}", e.message);
    let fix = e.fix.unwrap();
    assert!(
        fix.contains("--wait 1800") && fix.contains("disinto down"),
        "{fix}"
    );
}
