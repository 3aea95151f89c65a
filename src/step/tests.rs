//! Every step applied and undone on a real temp dir: the full manifest (modes, owners, sizes,
//! hashes, link targets, mtimes) before equals the one after. Between apply and undo the record
//! goes through the journal's JSON, as it does when a later run undoes. The directories a step
//! declares it touches get their mtimes back as the transaction does; a step that disturbed
//! another directory fails the comparison.

use super::*;
use crate::fsops::{diff, manifest};
use std::os::unix::fs::{symlink, PermissionsExt};

struct World {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    home: PathBuf,
    shared: PathBuf,
    config: PathBuf,
}

impl World {
    fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        for d in ["home", "shared", "factory"] {
            std::fs::create_dir(root.join(d)).unwrap();
        }
        World {
            _tmp: tmp,
            home: root.join("home"),
            shared: root.join("shared"),
            config: root.join("shared/config"),
            root,
        }
    }
    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            owner: None,
            home: &self.home,
            shared_dir: &self.shared,
            config_dir: &self.config,
            progress: &no_progress,
        }
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
    fn write(&self, rel: &str, bytes: &[u8], mode: u32) {
        let p = self.p(rel);
        std::fs::write(&p, bytes).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        set_mtime(&p, (1_600_000_000, 123_456_789)).unwrap();
    }
    fn mkdir(&self, rel: &str, mode: u32) {
        let p = self.p(rel);
        std::fs::create_dir(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    /// Fixed mtimes on every directory (innermost last is fine: setting one does not change
    /// its parent's), so a disturbed one shows.
    fn settle(&self) {
        let mut dirs = vec![];
        let mut stack = vec![self.root.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                }
            }
            dirs.push(d);
        }
        for d in dirs {
            set_mtime(&d, (1_500_000_000, 42)).unwrap();
        }
    }
}

fn no_progress(_: u64, _: u64) {}

/// Apply `step`, check it changed something (unless `changes` is false), pass its record
/// through JSON, undo it, restore the mtimes of the directories it declares, and compare.
fn round_trip(w: &World, step: Step, changes: bool) -> Wire {
    w.settle();
    let before = manifest(&w.root).unwrap();
    let ctx = w.ctx();
    let home = w.p("home");
    let mut dirs: Vec<(PathBuf, (i64, i64))> = Vec::new();
    for d in std::iter::once(home.clone()).chain(step.touched_dir()) {
        if let Ok(m) = std::fs::symlink_metadata(&d) {
            dirs.push((d, (m.mtime(), m.mtime_nsec())));
        }
    }
    let mut saved = Vec::new();
    let mut wire = Wire::default();
    apply(&step, &mut wire, &ctx, &mut |u: &Wire| {
        saved.push(u.clone());
        Ok(())
    })
    .unwrap();
    // Apply is idempotent: running it again (a resumed step) changes no content, mode, owner
    // or kind (a link is replaced again, atomically, so mtimes may move).
    let after = manifest(&w.root).unwrap();
    apply(&step, &mut wire, &ctx, &mut |_: &Wire| Ok(())).unwrap();
    let again: Vec<String> = diff(&after, &manifest(&w.root).unwrap())
        .into_iter()
        .filter(|l| !l.contains(": mtime "))
        .collect();
    assert_eq!(again, Vec::<String>::new(), "{} applied twice", step.id());
    if changes {
        assert!(
            !diff(&before, &after).is_empty(),
            "{} changed nothing",
            step.id()
        );
        assert!(
            !saved.is_empty(),
            "{} saved no record before changing",
            step.id()
        );
    }
    let json = serde_json::to_string(&wire).unwrap();
    let mut wire: Wire = serde_json::from_str(&json).unwrap();
    precheck_undo(&step, &wire).unwrap();
    undo(&step, &mut wire, &ctx, &mut |_: &Wire| Ok(())).unwrap();
    for (d, t) in dirs.iter().rev() {
        set_mtime(d, *t).unwrap();
    }
    assert_eq!(
        diff(&before, &manifest(&w.root).unwrap()),
        Vec::<String>::new(),
        "{} undo left a difference",
        step.id()
    );
    wire
}

#[test]
fn create_shared_dir_round_trip() {
    let w = World::new();
    let dirs = vec![w.p("shared/a"), w.p("shared/a/b")];
    let r = round_trip(
        &w,
        Step::CreateSharedDir(CreateSharedDir { dirs: dirs.clone() }),
        true,
    );
    assert_eq!(r.created_dirs, dirs);
}

#[test]
fn create_config_dir_and_remove_empty_claude_dir_round_trips() {
    let w = World::new();
    let path = w.p("shared/config");
    round_trip(&w, Step::CreateConfigDir(CreateConfigDir { path }), true);
    w.mkdir("home/.claude", 0o751);
    let path = w.p("home/.claude");
    round_trip(
        &w,
        Step::RemoveEmptyClaudeDir(RemoveEmptyClaudeDir { path }),
        true,
    );
}

#[test]
fn secure_config_dir_round_trip() {
    let w = World::new();
    w.mkdir("shared/config", 0o755);
    let m = std::fs::metadata(w.p("shared/config")).unwrap();
    round_trip(
        &w,
        Step::SecureConfigDir(SecureConfigDir {
            path: w.p("shared/config"),
            uid: m.uid(),
            gid: m.gid(),
            chown: false,
        }),
        true,
    );
}

fn legacy_claude(w: &World) {
    w.mkdir("home/.claude", 0o755);
    w.mkdir("home/.claude/projects", 0o700);
    w.write("home/.claude/.credentials.json", b"{\"token\":1}", 0o600);
    w.write("home/.claude/projects/a.jsonl", &[7u8; 5000], 0o644);
    symlink("projects/a.jsonl", w.p("home/.claude/last")).unwrap();
}

fn move_config(w: &World, method: Method) -> Step {
    Step::MoveConfig(MoveConfig {
        from: w.p("home/.claude"),
        to: w.p("shared/config"),
        method,
        files: 2,
        bytes: 5011,
    })
}

#[test]
fn move_config_by_rename_round_trip() {
    let w = World::new();
    legacy_claude(&w);
    let r = round_trip(&w, move_config(&w, Method::Rename), true);
    assert_eq!(r.phase, None);
}

#[test]
fn move_config_by_verified_copy_round_trip_with_typed_phases() {
    let w = World::new();
    legacy_claude(&w);
    let r = round_trip(&w, move_config(&w, Method::VerifiedCopy), true);
    assert_eq!(r.phase.as_deref(), Some("placed"));
    assert_eq!(r.undo_phase.as_deref(), Some("restored"));
    let typed = MoveConfig::record(&r).unwrap();
    assert_eq!(typed.phase, Some(move_config::Phase::Placed));
    assert!(!typed.undo_copies_back());
}

#[test]
fn move_config_replacing_an_empty_config_dir_round_trip() {
    let w = World::new();
    legacy_claude(&w);
    w.mkdir("shared/config", 0o750);
    let r = round_trip(&w, move_config(&w, Method::Rename), true);
    assert_eq!(r.dir_meta.map(|m| m.mode), Some(0o750));
}

#[test]
fn move_claude_json_round_trip_both_methods() {
    for method in [Method::Rename, Method::VerifiedCopy] {
        let w = World::new();
        w.mkdir("shared/config", 0o700);
        w.write("home/.claude.json", b"{\"oauthAccount\":1}", 0o600);
        let r = round_trip(
            &w,
            Step::MoveClaudeJson(MoveClaudeJson {
                from: w.p("home/.claude.json"),
                to: w.p("shared/config/.claude.json"),
                method,
            }),
            true,
        );
        let want = match method {
            Method::Rename => "copying",
            Method::VerifiedCopy => "copied",
        };
        assert_eq!(r.phase.as_deref(), Some(want));
        assert!(r.parent_mtime.is_some());
    }
}

#[test]
fn link_round_trip_new_and_replacing_another_link() {
    let w = World::new();
    w.mkdir("shared/config", 0o700);
    let step = Step::LinkClaudeDir(Link {
        link: w.p("home/.claude"),
        target: w.p("shared/config"),
    });
    let r = round_trip(&w, step.clone(), true);
    assert_eq!(r.prev_link, None);
    symlink("/somewhere/else", w.p("home/.claude")).unwrap();
    let r = round_trip(&w, step, true);
    assert_eq!(r.prev_link, Some(PathBuf::from("/somewhere/else")));
}

#[test]
fn write_env_file_round_trip_existing_and_new() {
    let w = World::new();
    let step = Step::WriteEnvFile(WriteEnvFile {
        path: w.p("factory/.env"),
    });
    let r = round_trip(&w, step.clone(), true);
    assert!(!r.existed);
    w.write("factory/.env", b"# secrets\nTOKEN=a|b&c\n", 0o640);
    let r = round_trip(&w, step, true);
    assert!(r.existed);
    assert_eq!(
        r.prev_bytes.as_deref(),
        Some(&b"# secrets\nTOKEN=a|b&c\n"[..])
    );
}

#[test]
fn write_profile_round_trip_creates_and_removes_fish_conf_d() {
    let w = World::new();
    w.mkdir("home/.config", 0o755);
    let r = round_trip(
        &w,
        Step::WriteProfile(WriteProfile {
            path: w.p("home/.config/fish/conf.d/disinto.fish"),
            fish: true,
        }),
        true,
    );
    assert_eq!(
        r.created_dirs,
        vec![w.p("home/.config/fish"), w.p("home/.config/fish/conf.d")]
    );
    w.write("home/.bashrc", b"# mine\n", 0o644);
    round_trip(
        &w,
        Step::WriteProfile(WriteProfile {
            path: w.p("home/.bashrc"),
            fish: false,
        }),
        true,
    );
}

#[test]
fn verify_changes_nothing() {
    let w = World::new();
    let r = round_trip(&w, Step::Verify(Verify {}), false);
    assert_eq!(r, Wire::default());
}

#[test]
fn undo_refuses_an_edit_made_since() {
    let w = World::new();
    w.write("factory/.env", b"A=1\n", 0o600);
    let ctx = w.ctx();
    let step = Step::WriteEnvFile(WriteEnvFile {
        path: w.p("factory/.env"),
    });
    let mut wire = Wire::default();
    apply(&step, &mut wire, &ctx, &mut |_: &Wire| Ok(())).unwrap();
    std::fs::write(w.p("factory/.env"), b"edited\n").unwrap();
    let e = precheck_undo(&step, &wire).unwrap_err();
    assert!(
        e.message
            .contains("was changed after the migration wrote it"),
        "{e}"
    );
    // An env file's lines are not quoted (values may be tokens); a line that is not
    // `KEY=value` is not shown either.
    assert!(e.message.contains("  + (a line not shown)"), "{e}");
    assert!(e.message.contains("  - A=(value not shown)"), "{e}");
    let e = undo(&step, &mut wire, &ctx, &mut |_: &Wire| Ok(())).unwrap_err();
    assert!(e.message.contains("undo will not overwrite that edit"));
    assert_eq!(std::fs::read(w.p("factory/.env")).unwrap(), b"edited\n");
}

/// A journal written by version 0.1.0 (before the step modules), captured from that binary's
/// run of a cross-device migration: it loads, every record reads as its step's typed record and
/// back to the same wire form, and the whole journal serialises to the same bytes.
#[test]
fn journal_written_by_0_1_0_still_loads_unchanged() {
    let old = include_str!("testdata/journal-0.1.0.json");
    let j: crate::journal::Journal = serde_json::from_str(old).unwrap();
    let ids: Vec<&str> = j.entries.iter().map(|e| e.step.id()).collect();
    assert_eq!(
        ids,
        [
            "create-shared-dir",
            "move-config",
            "secure-config-dir",
            "link-claude-dir",
            "move-claude-json",
            "link-claude-json",
            "write-env-file",
            "write-profile"
        ]
    );
    for e in &j.entries {
        assert_eq!(
            e.step.typed_wire(&e.undo).unwrap(),
            e.undo,
            "{}",
            e.step.id()
        );
    }
    let Step::MoveConfig(_) = &j.entries[1].step else {
        panic!()
    };
    assert_eq!(
        MoveConfig::record(&j.entries[1].undo).unwrap().phase,
        Some(move_config::Phase::Placed)
    );
    assert_eq!(serde_json::to_string_pretty(&j).unwrap(), old.trim_end());
}

#[test]
fn an_unknown_phase_is_an_error_not_a_guess() {
    let w = Wire {
        recorded: true,
        phase: Some("half-placed".into()),
        ..Wire::default()
    };
    let e = MoveConfig::record(&w).unwrap_err();
    assert!(e.message.contains("unknown phase 'half-placed'"), "{e}");
}

/// Set `path`'s mtime (not following a symlink), leaving its atime as it is.
fn set_mtime(path: &Path, (sec, nsec): (i64, i64)) -> std::io::Result<()> {
    use nix::sys::time::TimeSpec;
    const UTIME_OMIT: i64 = (1i64 << 30) - 2;
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &TimeSpec::new(0, UTIME_OMIT),
        &TimeSpec::new(sec, nsec),
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(std::io::Error::from)
}
