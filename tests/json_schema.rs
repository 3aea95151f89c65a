//! docs/json-schema.json describes the `--json` document: every document the real binary prints
//! (status, dry run, migrate, second run, verify healthy and with problems, undo, refusal, no
//! terminal, usage error, a rolled-back failure) must validate against it, `exit_code` must be
//! the process's exit code, and `changed` must be honest. The schema must also reject documents
//! that break it, so a validator that accepts everything cannot pass.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::OnceLock;

fn schema() -> &'static Value {
    static S: OnceLock<Value> = OnceLock::new();
    S.get_or_init(|| {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/json-schema.json");
        let text =
            std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()))
    })
}

fn validator() -> jsonschema::Validator {
    jsonschema::draft202012::new(schema()).expect("docs/json-schema.json compiles as draft 2020-12")
}

/// Every violation, one per line, with where in the document it is.
fn violations(doc: &Value) -> Vec<String> {
    let v = validator();
    v.iter_errors(doc)
        .map(|e| format!("at {}: {e}", e.instance_path()))
        .collect()
}

#[track_caller]
fn assert_valid(what: &str, doc: &Value) {
    let errs = violations(doc);
    assert!(
        errs.is_empty(),
        "{what}: the --json document does not match docs/json-schema.json:\n  {}\ndocument:\n{doc:#}",
        errs.join("\n  ")
    );
}

/// Run with `--json`, validate, and check `exit_code` against the real exit code and `changed`
/// against what the caller knows. Returns the document.
#[track_caller]
fn check(what: &str, cmd: &mut std::process::Command, want_code: i32, want_changed: bool) -> Value {
    let r = run(cmd.arg("--json"));
    let doc: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| {
        panic!(
            "{what}: stdout is not one JSON document ({e}); exit {}\nstdout:\n{}\nstderr:\n{}",
            r.code, r.stdout, r.stderr
        )
    });
    assert_valid(what, &doc);
    assert_eq!(
        doc["exit_code"],
        json!(r.code),
        "{what}: exit_code in the document is not the process's exit code"
    );
    assert_eq!(r.code, want_code, "{what}: exit code; document:\n{doc:#}");
    assert_eq!(
        doc["changed"],
        json!(want_changed),
        "{what}: `changed` is dishonest; document:\n{doc:#}"
    );
    // Machines read stdout: nothing for people may leak into it, and it is one document.
    assert!(
        r.stdout.trim_end().ends_with('}') && r.stdout.trim_start().starts_with('{'),
        "{what}: stdout holds more than the document:\n{}",
        r.stdout
    );
    doc
}

fn step_ids(doc: &Value) -> Vec<&str> {
    doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect()
}

#[test]
fn the_schema_is_a_valid_draft_2020_12_schema() {
    if let Err(e) = jsonschema::meta::validate(schema()) {
        panic!("docs/json-schema.json is not a valid JSON Schema: {e}");
    }
    assert_eq!(
        schema()["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
}

#[test]
fn a_whole_lifecycle_produces_valid_honest_documents() {
    let w = World::realistic();
    let before = w.manifest();

    let doc = check("status (legacy)", &mut w.cmd_sub("status"), 0, false);
    assert_eq!(doc["layout"], "legacy");
    assert_eq!(doc["command"], "status");

    let doc = check("migrate --dry-run", w.cmd().arg("--dry-run"), 0, false);
    assert_eq!(doc["dry_run"], true);
    assert!(doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["status"] == "planned" || s["status"] == "skipped"));
    assert!(step_ids(&doc).contains(&"move-config"), "{doc:#}");
    assert_same(&before, &w.manifest(), "status and --dry-run");

    // No terminal and no --yes: exit 4, nothing changed.
    let doc = check("migrate without --yes, no tty", &mut w.cmd(), 4, false);
    assert_eq!(doc["error"]["kind"], "not-confirmed");
    assert_same(&before, &w.manifest(), "not confirmed");

    let doc = check("migrate --yes", w.cmd().arg("--yes"), 0, true);
    assert_eq!(doc["layout"], "legacy");
    assert_eq!(doc["error"], Value::Null);
    assert!(
        doc["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "done" || s["status"] == "skipped"),
        "{doc:#}"
    );
    assert!(
        doc["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["status"] == "done" && s["id"] != "verify")
            .all(|s| s["duration_ms"].is_u64()),
        "every step that ran has its duration: {doc:#}"
    );

    let after = w.manifest();
    let doc = check("second migrate --yes", w.cmd().arg("--yes"), 0, false);
    assert_eq!(doc["layout"], "migrated");
    assert_same(&after, &w.manifest(), "second run");

    let doc = check("verify (healthy)", &mut w.cmd_sub("verify"), 0, false);
    assert_eq!(doc["problems"], json!([]));
    let doc = check("status (migrated)", &mut w.cmd_sub("status"), 0, false);
    assert_eq!(doc["layout"], "migrated");
    let doc = check(
        "undo --dry-run",
        w.cmd_sub("undo").arg("--dry-run"),
        0,
        false,
    );
    assert!(!doc["steps"].as_array().unwrap().is_empty(), "{doc:#}");
    assert_same(&after, &w.manifest(), "verify, status, undo --dry-run");

    let doc = check(
        "undo without --yes, no tty",
        &mut w.cmd_sub("undo"),
        4,
        false,
    );
    assert_eq!(doc["error"]["kind"], "not-confirmed");
    assert_same(&after, &w.manifest(), "undo not confirmed");

    let doc = check("undo --yes", w.cmd_sub("undo").arg("--yes"), 0, true);
    assert_eq!(doc["command"], "undo");
    assert_eq!(doc["layout"], "legacy", "undo reports the layout it left");
    assert_same(&before, &w.manifest(), "undo restores everything");

    let doc = check(
        "second undo --yes",
        w.cmd_sub("undo").arg("--yes"),
        0,
        false,
    );
    assert_eq!(doc["steps"], json!([]));
    assert_same(&before, &w.manifest(), "second undo");
}

#[test]
fn refusals_and_usage_errors_are_valid_documents_that_change_nothing() {
    let w = load_fixture("conflict");
    let before = w.manifest();
    for (what, args) in [
        ("conflict, --yes", vec!["--yes"]),
        ("conflict, --dry-run", vec!["--dry-run"]),
        ("conflict, no --yes", vec![]),
    ] {
        let doc = check(what, w.cmd().args(&args), 3, false);
        assert_eq!(doc["layout"], "conflict", "{what}");
        assert_eq!(doc["error"]["kind"], "conflict", "{what}");
        assert!(doc["error"]["fix"].is_string(), "{what}: {doc:#}");
        assert_eq!(doc["steps"], json!([]), "{what}: a refusal plans nothing");
    }
    let doc = check("status (conflict)", &mut w.cmd_sub("status"), 0, false);
    assert_eq!(doc["layout"], "conflict");
    assert_same(&before, &w.manifest(), "refusals");

    // Usage errors still print the document, with the paths that could not be resolved null.
    let doc = check(
        "relative --shared-dir",
        w.cmd_bare().args(["--home"]).arg(&w.home).args([
            "--shared-dir",
            "relative/shared",
            "--yes",
        ]),
        2,
        false,
    );
    assert_eq!(doc["error"]["kind"], "relative-path", "{doc:#}");
    let missing = w.root.join("no/such/home");
    let doc = check(
        "nonexistent --home",
        w.cmd_bare()
            .arg("--home")
            .arg(&missing)
            .arg("--shared-dir")
            .arg(&w.shared)
            .arg("--yes"),
        2,
        false,
    );
    assert!(doc["error"]["kind"].is_string(), "{doc:#}");
    assert_same(&before, &w.manifest(), "usage errors");
}

#[test]
fn verify_with_problems_is_exit_5() {
    // The fixture's links are in place but the env file and rc block were never written.
    let w = load_fixture("migrated");
    write_env_file(&w.env_file);
    let before = w.manifest();
    let doc = check("verify (problems)", &mut w.cmd_sub("verify"), 5, false);
    assert_eq!(doc["error"], Value::Null, "{doc:#}");
    let problems = doc["problems"].as_array().unwrap();
    assert!(!problems.is_empty(), "{doc:#}");
    assert_same(&before, &w.manifest(), "verify");
}

#[cfg(feature = "failpoints")]
#[test]
fn a_rolled_back_failure_is_exit_1_and_unchanged() {
    let w = World::realistic();
    let before = w.manifest();
    let doc = check(
        "failure at link-claude-dir",
        w.cmd()
            .arg("--yes")
            .env("DCI_FAILPOINTS", "apply-link-claude-dir=error"),
        1,
        false,
    );
    let statuses: Vec<(&str, &str)> = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert!(
        statuses.contains(&("link-claude-dir", "failed")),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&("move-config", "rolled-back")),
        "{statuses:?}"
    );
    assert!(doc["error"]["kind"].is_string(), "{doc:#}");
    assert_same(&before, &w.manifest(), "rolled back");
}

/// A known-good document, then one mutation each that the schema must reject.
#[test]
fn the_schema_rejects_broken_documents() {
    let w = load_fixture("legacy");
    let r = run(w.cmd().args(["--dry-run", "--json"]));
    let good: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_valid("dry run", &good);

    type Mutation = Box<dyn Fn(&mut Value)>;
    let mutations: Vec<(&str, Mutation)> = vec![
        (
            "no `changed`",
            Box::new(|d| {
                d.as_object_mut().unwrap().remove("changed");
            }),
        ),
        (
            "unknown top-level field",
            Box::new(|d| d["surprise"] = json!(1)),
        ),
        (
            "unknown layout",
            Box::new(|d| d["layout"] = json!("sideways")),
        ),
        (
            "unknown step id",
            Box::new(|d| d["steps"][0]["id"] = json!("frobnicate")),
        ),
        (
            "unknown step status",
            Box::new(|d| d["steps"][0]["status"] = json!("maybe")),
        ),
        (
            "step without summary",
            Box::new(|d| {
                d["steps"][0].as_object_mut().unwrap().remove("summary");
            }),
        ),
        (
            "negative duration",
            Box::new(|d| d["steps"][0]["duration_ms"] = json!(-1)),
        ),
        ("exit code 7", Box::new(|d| d["exit_code"] = json!(7))),
        (
            "exit 3 without error",
            Box::new(|d| d["exit_code"] = json!(3)),
        ),
        (
            "error with exit 0",
            Box::new(|d| d["error"] = json!({"kind": "conflict", "message": "m", "fix": null})),
        ),
        (
            "error without kind",
            Box::new(|d| {
                d["error"] = json!({"message": "m", "fix": null});
                d["exit_code"] = json!(3);
            }),
        ),
        (
            "error kind not kebab-case",
            Box::new(|d| {
                d["error"] = json!({"kind": "Conflict", "message": "m", "fix": null});
                d["exit_code"] = json!(3);
            }),
        ),
        (
            "dry run that changed",
            Box::new(|d| d["changed"] = json!(true)),
        ),
        (
            "refusal that changed",
            Box::new(|d| {
                d["dry_run"] = json!(false);
                d["changed"] = json!(true);
                d["error"] = json!({"kind": "conflict", "message": "m", "fix": "f"});
                d["exit_code"] = json!(3);
            }),
        ),
        (
            "relative home",
            Box::new(|d| d["home"] = json!("home/user")),
        ),
        (
            "problem without fix",
            Box::new(|d| {
                d["problems"] = json!([{"kind": "credentials-mode", "message": "m"}]);
                d["exit_code"] = json!(5);
            }),
        ),
        (
            "exit 5 with no problems",
            Box::new(|d| d["exit_code"] = json!(5)),
        ),
        (
            "stopped_at outside interrupted",
            Box::new(|d| d["stopped_at"] = json!("move-config")),
        ),
        (
            "an unknown command",
            Box::new(|d| d["command"] = json!("frobnicate")),
        ),
        (
            "agents listed by undo",
            Box::new(|d| {
                d["command"] = json!("undo");
                d["agents"] = json!([agent()]);
            }),
        ),
        (
            "agents not an array",
            Box::new(|d| d["agents"] = json!(agent())),
        ),
        (
            "an unknown agent verdict",
            Box::new(|d| d["agents"] = json!([with(agent(), "verdict", json!("probably"))])),
        ),
        (
            "an agent without its lock probe",
            Box::new(|d| {
                let mut a = agent();
                a.as_object_mut().unwrap().remove("lock_probe");
                d["agents"] = json!([a]);
            }),
        ),
        (
            "a short container id",
            Box::new(|d| {
                let c = json!({"runtime": "docker", "id": "0123456789ab"});
                d["agents"] = json!([with(agent(), "container", c)]);
            }),
        ),
        (
            "a lock that is not <dir>.lock",
            Box::new(|d| d["agents"] = json!([with(agent(), "lock", json!("/srv/config"))])),
        ),
        (
            "an agent without `factory`",
            Box::new(|d| {
                let mut a = agent();
                a.as_object_mut().unwrap().remove("factory");
                d["agents"] = json!([a]);
            }),
        ),
        (
            "an unknown agent field",
            Box::new(|d| d["agents"] = json!([with(agent(), "namespace", json!(4026531840u64))])),
        ),
    ];
    for (what, mutate) in &mutations {
        let mut bad = good.clone();
        mutate(&mut bad);
        assert!(
            !violations(&bad).is_empty(),
            "the schema accepts a document with {what}:\n{bad:#}"
        );
    }
    // And a few legal variations it must accept.
    let mut ok = good.clone();
    ok["layout"] = json!("interrupted");
    ok["stopped_at"] = json!("move-config");
    ok["env_file"] = Value::Null;
    ok["profile"] = Value::Null;
    assert_valid("interrupted, no env file, no profile", &ok);
    let mut ok = good.clone();
    ok["command"] = json!("undo");
    assert_valid("undo, which lists no agents", &ok);
    let mut ok = good.clone();
    ok["agents"] = json!([]);
    assert_valid("no agents running", &ok);
    let unread = json!({
        "pid": 7, "uid": 1000, "gid": 1000, "container": null, "own_mount_namespace": true,
        "program": "claude", "config_dir": null, "config_dir_from": null,
        "real_config_dir": null, "lock": null, "verdict": "cannot-read",
        "reason": "its environment (/proc/7/environ) cannot be read: Permission denied",
        "lock_probe": null,
        "factory": false
    });
    ok["agents"] = json!([agent(), unread]);
    assert_valid(
        "an agent that shares the lock and one that cannot be read",
        &ok,
    );
}

/// A well-formed agent of the `agents` array (docs/agents.md).
fn agent() -> Value {
    json!({
        "pid": 4242,
        "uid": 1000,
        "gid": 1000,
        "container": {
            "runtime": "docker",
            "id": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        },
        "own_mount_namespace": true,
        "program": "/usr/local/lib/node_modules/@anthropic-ai/claude-code/bin/claude.exe",
        "config_dir": "/var/lib/disinto/claude-shared/config",
        "config_dir_from": "CLAUDE_CONFIG_DIR",
        "real_config_dir": "/var/lib/disinto/claude-shared/config",
        "lock": "/var/lib/disinto/claude-shared/config.lock",
        "verdict": "shares-lock",
        "reason": "the host's config dir, through the same parent directory",
        "lock_probe": {
            "ok": true,
            "path": "/var/lib/disinto/claude-shared/config.dci-probe-77",
            "error": null
        },
        "factory": true
    })
}

fn with(mut v: Value, key: &str, value: Value) -> Value {
    v[key] = value;
    v
}

/// The whole documents shown in docs/json.md are valid too (the docs cannot drift from the
/// schema).
#[test]
fn the_examples_in_json_md_are_valid() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/json.md");
    let md = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    let mut whole = 0;
    for block in md.split("```json\n").skip(1) {
        let body = block.split("\n```").next().unwrap();
        if !body.starts_with('{') {
            continue; // a fragment, not a document
        }
        let doc: Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("an example in docs/json.md is not JSON ({e}):\n{body}"));
        assert_valid("docs/json.md example", &doc);
        whole += 1;
    }
    assert!(whole >= 2, "docs/json.md shows {whole} whole documents");
}

/// A rollback that fails too: exit 6, and `changed` is true because the move stayed done.
#[cfg(feature = "failpoints")]
#[test]
fn a_failed_rollback_is_exit_6_and_changed() {
    let w = World::realistic();
    let before = w.manifest();
    let doc = check(
        "rollback fails",
        w.cmd().arg("--yes").env(
            "DCI_FAILPOINTS",
            "apply-link-claude-dir=error,undo-move-config=error",
        ),
        6,
        true,
    );
    assert_eq!(doc["error"]["kind"], "rollback-failed", "{doc:#}");
    let journal = doc["journal"].as_str().unwrap();
    assert!(
        doc["error"]["message"].as_str().unwrap().contains(journal),
        "exit 6 names the journal: {doc:#}"
    );
    // The journal lets undo finish the job.
    let doc = check("undo after exit 6", w.cmd_sub("undo").arg("--yes"), 0, true);
    assert_eq!(doc["layout"], "legacy", "{doc:#}");
    assert_same(&before, &w.manifest(), "exit 6, then undo");
}
