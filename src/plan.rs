//! Planning: layout + facts + settings -> the ordered steps that will run. Pure.
//!
//! The plan printed by `--dry-run` is this same value; the real run executes it step by step,
//! so the preview cannot drift from what happens (Terraform's plan/apply).

use crate::envfile;
use crate::layout::{claude_json_action, ClaudeJsonAction, Facts, Layout, Node};
use crate::profile;
use crate::settings::{env_entries, Settings};
use crate::step::{
    changed_lines, rewrite_detail, CreateClaudeJson, CreateConfigDir, CreateSharedDir, Link,
    MoveClaudeJson, MoveConfig, RemoveEmptyClaudeDir, RewriteLinks, SecureConfigDir,
    SecureCredentials, Verify, WriteEnvFile, WriteProfile,
};
pub use crate::step::{Method, Step};
use std::ffi::OsStr;

/// A step in the plan, or one that is not needed, with why.
#[derive(Debug, Clone)]
pub struct Planned {
    pub step: Step,
    /// `Some(reason)` when the step is already satisfied and will be skipped.
    pub skip: Option<String>,
    /// What exactly it will write, for people (e.g. the env file lines it adds or replaces).
    pub detail: Option<String>,
}

/// The lines a rewrite removes (`-`) and adds (`+`): only ours, so nothing secret is shown.
pub fn line_changes(old: &[u8], new: &[u8]) -> String {
    let lines = |b: &[u8]| -> Vec<String> {
        String::from_utf8_lossy(b)
            .lines()
            .map(|l| l.trim_end_matches('\r').to_string())
            .collect()
    };
    changed_lines(&lines(old), &lines(new), |c, l| {
        format!("{c} {l}").trim_end().to_string()
    })
    .join("\n")
}

/// The plan's note naming every line of `rc` (as the run will leave it) that comes after the
/// managed block and sets, exports or unsets `CLAUDE_CONFIG_DIR`; None when there is none.
/// The file is read, never executed (see `profile::later_overrides`).
pub fn override_note(path: &std::path::Path, rc: &[u8]) -> Option<String> {
    let found = profile::later_overrides(rc);
    if found.is_empty() {
        return None;
    }
    let mut n = String::from(
        "note: these later lines override the block (new shells get their value; verify will report profile-overridden, exit 5; delete or change them):",
    );
    for o in &found {
        n.push_str(&format!(
            "\n  {}:{}: {}",
            crate::pathser::show(path),
            o.line,
            String::from_utf8_lossy(&o.text)
        ));
    }
    Some(n)
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub steps: Vec<Planned>,
}

impl Plan {
    /// Whether running it would change anything.
    pub fn changes(&self) -> bool {
        self.steps
            .iter()
            .any(|p| p.skip.is_none() && p.step.changes())
    }
    pub fn runnable(&self) -> impl Iterator<Item = &Step> {
        self.steps
            .iter()
            .filter(|p| p.skip.is_none())
            .map(|p| &p.step)
    }
    /// Whether running it moves, removes or replaces `~/.claude` (or moves `~/.claude.json`):
    /// what an agent running now would notice. One definition for both the preflight refusal
    /// (`preflight::check_with`) and the `--wait` queue (`live`), so they never disagree on
    /// which plans need the agents stopped.
    pub fn touches_claude(&self) -> bool {
        self.runnable().any(|st| {
            matches!(
                st,
                Step::MoveConfig(_)
                    | Step::RemoveEmptyClaudeDir(_)
                    | Step::LinkClaudeDir(_)
                    | Step::MoveClaudeJson(_)
            )
        })
    }
}

/// Build the plan for a layout that needs no operator (the caller has checked the refusal).
/// Pure: everything comes from the facts and settings.
pub fn build(layout: Layout, f: &Facts, s: &Settings) -> Plan {
    let mut steps = Vec::new();
    let run = |step: Step| Planned {
        step,
        skip: None,
        detail: None,
    };
    let run_with = |step: Step, detail: String| Planned {
        step,
        skip: None,
        detail: Some(detail),
    };
    let skip = |step: Step, why: &str| Planned {
        step,
        skip: Some(why.to_string()),
        detail: None,
    };
    let secure = || {
        Step::SecureConfigDir(SecureConfigDir {
            path: s.config_dir.clone(),
            uid: s.owner.uid,
            gid: s.owner.gid,
            chown: s.chown_needed(),
        })
    };
    let needs_secure = |n: &Node| match n {
        Node::Dir { mode, uid, gid, .. } => {
            *mode != 0o700 || (s.chown_needed() && (*uid != s.owner.uid || *gid != s.owner.gid))
        }
        _ => true,
    };

    if !f.missing_dirs.is_empty() && !matches!(layout, Layout::Migrated) {
        steps.push(run(Step::CreateSharedDir(CreateSharedDir {
            dirs: f.missing_dirs.clone(),
        })));
    }
    match layout {
        Layout::Legacy => {
            let method = Method::for_same_fs(f.same_fs);
            steps.push(run(Step::MoveConfig(MoveConfig {
                from: s.claude_dir(),
                to: s.config_dir.clone(),
                method,
                files: f.claude_stats.files,
                bytes: f.claude_stats.bytes,
            })));
            if !f.leaving_links.is_empty() {
                steps.push(run_with(
                    Step::RewriteLinks(RewriteLinks {
                        dir: s.config_dir.clone(),
                        links: f.leaving_links.clone(),
                    }),
                    rewrite_detail(&f.leaving_links),
                ));
            }
            if needs_secure(&f.claude) {
                steps.push(run(secure()));
            } else {
                steps.push(skip(
                    secure(),
                    "already mode 0700 and owned by the home's owner",
                ));
            }
        }
        Layout::Fresh | Layout::Adopt | Layout::DanglingSymlink | Layout::Migrated => {
            match &f.config {
                Node::Absent => steps.push(run(Step::CreateConfigDir(CreateConfigDir {
                    path: s.config_dir.clone(),
                }))),
                n if needs_secure(n) => steps.push(run(secure())),
                _ => steps.push(skip(
                    secure(),
                    "already mode 0700 and owned by the home's owner",
                )),
            }
            if matches!(f.claude, Node::Dir { empty: true, .. }) {
                steps.push(run(Step::RemoveEmptyClaudeDir(RemoveEmptyClaudeDir {
                    path: s.claude_dir(),
                })));
            }
        }
        // Refused layouts have no plan; `interrupted` is planned from the journal.
        _ => {}
    }
    // Credentials wider than 0600 (or, as root, not the owner's) are fixed, not just reported:
    // the tool is the one putting them where every container can reach the directory.
    if let Some((mode, uid, gid)) = f.credentials {
        let chown = s.chown_needed() && (uid != s.owner.uid || gid != s.owner.gid);
        if mode != 0o600 || chown {
            steps.push(run(Step::SecureCredentials(SecureCredentials {
                path: s.config_dir.join(".credentials.json"),
                uid: s.owner.uid,
                gid: s.owner.gid,
                chown,
            })));
        }
    }
    let link_dir = Step::LinkClaudeDir(Link {
        link: s.claude_dir(),
        target: s.config_dir.clone(),
    });
    if layout == Layout::Migrated {
        steps.push(skip(link_dir, "already a link to the config dir"));
    } else {
        steps.push(run(link_dir));
    }

    let link_json = Step::LinkClaudeJson(Link {
        link: s.claude_json(),
        target: s.config_claude_json(),
    });
    match claude_json_action(layout, f, s) {
        ClaudeJsonAction::Move => {
            let method = Method::for_same_fs(f.claude_json_same_fs);
            steps.push(run(Step::MoveClaudeJson(MoveClaudeJson {
                from: s.claude_json(),
                to: s.config_claude_json(),
                method,
            })));
            steps.push(run(link_json));
        }
        ClaudeJsonAction::Link {
            create,
            remove_empty_dir,
            link,
        } => {
            if remove_empty_dir {
                steps.push(run(Step::RemoveEmptyClaudeJsonDir(RemoveEmptyClaudeDir {
                    path: s.claude_json(),
                })));
            }
            if create {
                steps.push(run(Step::CreateClaudeJson(CreateClaudeJson {
                    path: s.config_claude_json(),
                })));
            }
            if link {
                steps.push(run(link_json));
            } else {
                steps.push(skip(
                    link_json,
                    "already a link to the config dir's .claude.json",
                ));
            }
        }
        ClaudeJsonAction::Nothing => steps.push(skip(
            link_json,
            "already a link to the config dir's .claude.json",
        )),
        ClaudeJsonAction::Refuse(_) => {}
    }

    if let Some(env) = &f.env_file {
        let step = Step::WriteEnvFile(WriteEnvFile {
            path: env.path.clone(),
        });
        let entries = env_entries(s);
        let refs: Vec<(&str, &OsStr)> = entries.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
        let old = env.bytes.as_deref().unwrap_or_default();
        match envfile::edit(old, &refs) {
            Ok(None) if env.bytes.is_some() => steps.push(skip(step, "already sets both entries")),
            Ok(Some(new)) => steps.push(run_with(step, line_changes(old, &new))),
            _ => steps.push(run(step)),
        }
    }
    if let Some(p) = &f.profile {
        let fish = s.shell == profile::ShellKind::Fish;
        let step = Step::WriteProfile(WriteProfile {
            path: p.path.clone(),
            fish,
        });
        let block = profile::render_block(s.shell, &s.config_dir);
        // Lines after the block that override it, in the file as `apply_block` leaves it: the
        // run cannot fix the user's own line, so the plan says so before it starts.
        let note = |after: &[u8]| override_note(&p.path, after);
        match p.bytes.as_deref().map(|b| profile::apply_block(b, &block)) {
            Some(None) => {
                let why = "already holds the export block";
                match note(p.bytes.as_deref().unwrap_or_default()) {
                    Some(n) => steps.push(skip(step, &format!("{why}\n{n}"))),
                    None => steps.push(skip(step, why)),
                }
            }
            Some(Some(new)) => {
                let old = p.bytes.as_deref().unwrap_or_default();
                let mut detail = line_changes(old, &new);
                if let Some(n) = note(&new) {
                    detail.push('\n');
                    detail.push_str(&n);
                }
                steps.push(run_with(step, detail))
            }
            None => steps.push(run_with(
                step,
                format!("(new file)\n{}", line_changes(b"", &block)),
            )),
        }
    }
    steps.push(run(Step::Verify(Verify {})));
    Plan { steps }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsops::TreeStats;
    use crate::settings::Owner;

    fn settings() -> Settings {
        Settings {
            home: "/h".into(),
            owner: Owner {
                uid: 1000,
                gid: 1000,
                name: Some("u".into()),
                shell: None,
            },
            shared_dir: "/s".into(),
            config_dir: "/s/config".into(),
            env_file: None,
            env_file_note: String::new(),
            profile: None,
            shell: profile::ShellKind::Posix,
            state_dir: "/h/.local/state/disinto/claude-init".into(),
            agent_uid: 1000,
            agent_uid_given: false,
            euid: 1000,
        }
    }

    fn facts(claude: Node, config: Node, same_fs: bool) -> Facts {
        Facts {
            config_canonical: (!matches!(config, Node::Absent)).then(|| "/s/config".into()),
            claude,
            config,
            claude_json: Node::File { size: 2 },
            config_claude_json: Node::Absent,
            inner_claude_json: Node::Absent,
            claude_stats: TreeStats {
                files: 3,
                bytes: 2048,
                ..Default::default()
            },
            same_fs,
            claude_json_same_fs: same_fs,
            missing_dirs: vec!["/s".into()],
            env_file: None,
            profile: None,
            credentials: None,
            leaving_links: vec![],
        }
    }

    fn ids(p: &Plan) -> Vec<(&'static str, bool)> {
        p.steps
            .iter()
            .map(|s| (s.step.id(), s.skip.is_none()))
            .collect()
    }

    const DIR: Node = Node::Dir {
        empty: false,
        mode: 0o755,
        uid: 1000,
        gid: 1000,
    };
    /// A non-empty config dir already at 0700: the adopted and migrated cases share it.
    const PRIVATE: Node = Node::Dir {
        empty: false,
        mode: 0o700,
        uid: 1000,
        gid: 1000,
    };
    const EMPTY: Node = Node::Dir {
        empty: true,
        mode: 0o755,
        uid: 1000,
        gid: 1000,
    };

    #[test]
    fn legacy_moves_then_links_then_verifies() {
        let s = settings();
        let p = build(Layout::Legacy, &facts(DIR, Node::Absent, true), &s);
        assert_eq!(
            ids(&p),
            [
                ("create-shared-dir", true),
                ("move-config", true),
                ("secure-config-dir", true),
                ("link-claude-dir", true),
                ("move-claude-json", true),
                ("link-claude-json", true),
                ("verify", true)
            ]
        );
        assert!(
            p.steps[1].step.summary().contains("by rename"),
            "{}",
            p.steps[1].step.summary()
        );
        assert!(p.steps[1].step.summary().contains("3 files, 2.0 KiB"));
        let p = build(Layout::Legacy, &facts(DIR, Node::Absent, false), &s);
        assert!(matches!(
            p.steps[1].step,
            Step::MoveConfig(MoveConfig {
                method: Method::VerifiedCopy,
                ..
            })
        ));
        assert!(matches!(
            p.steps[4].step,
            Step::MoveClaudeJson(MoveClaudeJson {
                method: Method::VerifiedCopy,
                ..
            })
        ));
    }

    #[test]
    fn fresh_adopt_and_dangling_plans() {
        let s = settings();
        let p = build(Layout::Fresh, &facts(Node::Absent, Node::Absent, true), &s);
        assert_eq!(
            ids(&p)[..3],
            [
                ("create-shared-dir", true),
                ("create-config-dir", true),
                ("link-claude-dir", true)
            ]
        );
        let p = build(Layout::Fresh, &facts(EMPTY, Node::Absent, true), &s);
        assert!(ids(&p).contains(&("remove-empty-claude-dir", true)));
        let mut f = facts(Node::Absent, PRIVATE, true);
        f.missing_dirs.clear();
        let p = build(Layout::Adopt, &f, &s);
        assert_eq!(
            ids(&p)[0],
            ("secure-config-dir", false),
            "already 0700: skipped"
        );
        let dangling = Node::Symlink {
            target: "/gone".into(),
            resolves_to: None,
        };
        let p = build(
            Layout::DanglingSymlink,
            &facts(dangling, Node::Absent, true),
            &s,
        );
        assert!(ids(&p).contains(&("link-claude-dir", true)));
    }

    #[test]
    fn migrated_with_everything_in_place_changes_nothing() {
        let s = settings();
        let link = Node::Symlink {
            target: "/s/config".into(),
            resolves_to: Some("/s/config".into()),
        };
        let mut f = facts(link, PRIVATE, true);
        f.claude_json = Node::Symlink {
            target: "/s/config/.claude.json".into(),
            resolves_to: Some("/s/config/.claude.json".into()),
        };
        f.config_claude_json = Node::File { size: 2 };
        f.missing_dirs.clear();
        let p = build(Layout::Migrated, &f, &s);
        assert!(!p.changes(), "{:?}", ids(&p));
        // A predecessor's 0755 config dir is fixed on the next run.
        f.config = DIR;
        assert!(build(Layout::Migrated, &f, &s).changes());
    }

    #[test]
    fn env_file_plan_shows_exact_lines_and_skips_when_current() {
        let mut s = settings();
        s.env_file = Some("/f/.env".into());
        let env_step = |f: &Facts| {
            let p = build(Layout::Legacy, f, &s);
            p.steps
                .into_iter()
                .find(|p| p.step.id() == "write-env-file")
                .unwrap()
        };
        let mut f = facts(DIR, Node::Absent, true);
        f.env_file = Some(crate::layout::FileFacts {
            path: "/f/.env".into(),
            bytes: Some(b"A=1\nCLAUDE_CONFIG_DIR=/h/.claude\n".to_vec()),
        });
        let env = env_step(&f);
        assert_eq!(
            env.detail.as_deref(),
            Some("- CLAUDE_CONFIG_DIR=/h/.claude\n+ CLAUDE_CONFIG_DIR=/s/config\n+ CLAUDE_SHARED_DIR=/s")
        );
        f.env_file.as_mut().unwrap().bytes =
            Some(b"CLAUDE_SHARED_DIR=/s\nCLAUDE_CONFIG_DIR=${CLAUDE_SHARED_DIR}/config\n".to_vec());
        let env = env_step(&f);
        assert!(
            env.skip.is_some(),
            "a ${{}} reference that resolves right is left alone"
        );
    }

    #[test]
    fn steps_round_trip_through_the_journal_format() {
        let p = build(
            Layout::Legacy,
            &facts(DIR, Node::Absent, false),
            &settings(),
        );
        for st in p.runnable() {
            let json = serde_json::to_string(st).unwrap();
            assert!(json.contains(&format!("\"id\":\"{}\"", st.id())), "{json}");
            let back: Step = serde_json::from_str(&json).unwrap();
            assert_eq!(&back, st);
        }
    }
}
