use super::*;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::process::Command;

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn edit_str(original: &str, entries: &[(&str, &str)]) -> Option<String> {
    let e: Vec<(&str, &OsStr)> = entries.iter().map(|&(k, v)| (k, os(v))).collect();
    edit(original.as_bytes(), &e)
        .unwrap()
        .map(|b| String::from_utf8(b).unwrap())
}

/// Values with every character the brief calls out, plus mixes and edge shapes.
const NASTY: &[&str] = &[
    "with space",
    "hash#inside",
    "#leading-hash",
    "it's",
    "'",
    "''",
    "'quoted'",
    "say \"hi\"",
    "\"",
    "$HOME",
    "${HOME}",
    "$",
    "a|b",
    "a&b",
    "back\\slash",
    "trailing\\",
    "\\",
    "\\\\",
    "odd\\\\\\",
    "quote-then-backslash'\\",
    "backslash-then-quote\\'",
    "semi;colon",
    "`date`",
    "$(date)",
    "tab\there",
    " leading and trailing ",
    "",
    "~",
    "=",
    "a=b",
    "*",
    "?",
    "[x]",
    "{a,b}",
    "!bang",
    "<>",
    "()",
    "line1\nline2",
    "ends-with-newline\n",
    "ünïcødé ☃",
    "mix: it's a \"$VAR\" | & ; `x` \\ # end\\",
];

/// The NASTY values `quote_value` refuses, and why: a backslash, or `'` with `"`, `$` or `` ` ``.
fn unquotable(v: &str) -> bool {
    v.contains('\\') || (v.contains('\'') && v.contains(['"', '$', '`']))
}

#[test]
fn quote_value_exact_forms() {
    let q = |v| quote_value(v, false).unwrap();
    assert_eq!(
        q("/var/lib/disinto/claude-shared"),
        "/var/lib/disinto/claude-shared"
    );
    assert_eq!(q("a-b_c.d:e@f%g+h,i"), "a-b_c.d:e@f%g+h,i");
    assert_eq!(quote_value("/v", true).unwrap(), "'/v'");
    assert_eq!(q(""), "''");
    assert_eq!(q("a b"), "'a b'");
    assert_eq!(q("$X"), "'$X'");
    assert_eq!(q("a\"b"), "'a\"b'");
    assert_eq!(q("it's"), "\"it's\"");
    assert_eq!(q("'"), "\"'\"");
    assert_eq!(q("/srv/it's here/#1"), "\"/srv/it's here/#1\"");
    for bad in [
        "a\\",
        "a\\b",
        "\\",
        "it's $x",
        "it's \"q\"",
        "it's `x`",
        "x'\\",
    ] {
        assert!(quote_value(bad, false).is_err(), "{bad:?}");
        assert!(unquotable(bad));
    }
}

#[test]
fn unquotable_values_are_refused_with_the_reason() {
    let err = edit(b"A=1\n", &[("K", os("/srv/it's/$x"))]).unwrap_err();
    assert!(matches!(&err, EnvFileError::Unquotable { key, .. } if key == "K"));
    let msg = err.to_string();
    assert!(
        msg.contains("single quote") && msg.contains("--no-env-file"),
        "{msg}"
    );
    let err = check_entry("K", os("/srv/back\\slash")).unwrap_err();
    assert!(err.to_string().contains("backslash"), "{err}");
    assert_eq!(check_entry("K", os("/srv/it's")).unwrap(), "/srv/it's");
}

#[test]
fn quote_round_trips_through_dotenvy() {
    for v in NASTY.iter().filter(|v| !unquotable(v)) {
        let file = format!("K={}\nNEXT=after\n", quote_value(v, false).unwrap());
        let got = read_values(file.as_bytes()).unwrap_or_else(|e| panic!("{v:?}: {e}"));
        assert_eq!(got.get("K").map(String::as_str), Some(*v), "file: {file:?}");
        // The entry must not swallow the next line (unterminated quote to dotenvy).
        assert_eq!(
            got.get("NEXT").map(String::as_str),
            Some("after"),
            "{file:?}"
        );
        // And dotenvy itself (no `$` reaches it unquoted, so its environment does not matter).
        let real: BTreeMap<String, String> = dotenvy::from_read_iter(file.as_bytes())
            .map(Result::unwrap)
            .collect();
        assert_eq!(real, got, "{file:?}");
    }
}

fn bash_reads(file_bytes: &[u8], key: &str) -> Vec<u8> {
    shell_reads("bash", file_bytes, key)
}

/// `set -a; . FILE; printf %s "$KEY"` in a clean environment, stdout bytes.
fn shell_reads(shell: &str, file_bytes: &[u8], key: &str) -> Vec<u8> {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(file_bytes).unwrap();
    f.flush().unwrap();
    let source = if shell == "bash" { "source" } else { "." };
    let out = Command::new(shell)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .arg("-c")
        .arg(format!("set -a; {source} \"$1\"; printf %s \"${key}\""))
        .arg(shell)
        .arg(f.path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shell}: {e}"));
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{shell} failed on {:?}: {}",
        String::from_utf8_lossy(file_bytes),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn quote_round_trips_through_bash_source() {
    for v in NASTY.iter().filter(|v| !unquotable(v)) {
        let file = format!("K={}\nNEXT=after\n", quote_value(v, false).unwrap());
        assert_eq!(
            bash_reads(file.as_bytes(), "K"),
            v.as_bytes(),
            "file: {file:?}"
        );
        assert_eq!(bash_reads(file.as_bytes(), "NEXT"), b"after");
    }
}

#[test]
fn quote_round_trips_through_posix_sh() {
    // Not required by the factory (it uses bash) but free: POSIX single quoting.
    for v in NASTY.iter().filter(|v| !unquotable(v)) {
        let file = format!("K={}\nNEXT=after\n", quote_value(v, false).unwrap());
        assert_eq!(
            shell_reads("sh", file.as_bytes(), "K"),
            v.as_bytes(),
            "{file:?}"
        );
        assert_eq!(shell_reads("sh", file.as_bytes(), "NEXT"), b"after");
    }
}

#[test]
fn edit_writes_values_both_parsers_read_back() {
    // Through `edit` itself, in place and appended, with real bash.
    for v in NASTY.iter().filter(|v| !unquotable(v)) {
        let original = "# secrets\nTOKEN='s3cret'\nK=old\n";
        let new = edit(original.as_bytes(), &[("K", os(v)), ("NEW", os(v))])
            .unwrap()
            .expect("changes");
        let vals = read_values(&new).unwrap();
        assert_eq!(vals["K"], *v);
        assert_eq!(vals["NEW"], *v);
        assert_eq!(vals["TOKEN"], "s3cret");
        assert_eq!(bash_reads(&new, "K"), v.as_bytes());
        assert_eq!(bash_reads(&new, "NEW"), v.as_bytes());
        assert_eq!(bash_reads(&new, "TOKEN"), b"s3cret");
        let q = quote_value(v, false).unwrap();
        let expected = format!("# secrets\nTOKEN='s3cret'\nK={q}\nNEW={q}\n");
        assert_eq!(String::from_utf8(new.clone()).unwrap(), expected);
        let e: [(&str, &OsStr); 2] = [("K", os(v)), ("NEW", os(v))];
        assert_eq!(edit(&new, &e).unwrap(), None, "idempotent for {v:?}");
    }
}

#[test]
fn bash_round_trip_explicit_characters() {
    // The brief's list, one at a time, plus a mix (kept separate from NASTY so a shrinking
    // of that table cannot silently drop them).
    for v in [
        "a b",
        "a#b",
        "a'b",
        "a\"b",
        "a$b",
        "a|b",
        "a&b",
        "a`b",
        "a;b",
        "/p/x y/#1/'q'/d/v/|/&/;",
        "/p/x y/#1/q/\"d\"/$v/|/&/`/;",
    ] {
        let new = edit(b"", &[("KEY", os(v))]).unwrap().unwrap();
        assert_eq!(bash_reads(&new, "KEY"), v.as_bytes(), "{v:?}");
        assert_eq!(read_values(&new).unwrap()["KEY"], v);
    }
}

#[test]
fn bare_values_are_written_bare() {
    assert_eq!(
        edit_str(
            "",
            &[("CLAUDE_SHARED_DIR", "/var/lib/disinto/claude-shared")]
        )
        .unwrap(),
        "CLAUDE_SHARED_DIR=/var/lib/disinto/claude-shared\n"
    );
}

#[test]
fn empty_file_gets_just_the_lines() {
    assert_eq!(
        edit_str("", &[("A", "/a"), ("B", "/a b")]).unwrap(),
        "A=/a\nB='/a b'\n"
    );
}

#[test]
fn missing_key_is_appended_others_untouched() {
    let original = "# comment  \n\nFOO=\"bar baz\"   \nexport  TOKEN='x'\t# t\n";
    assert_eq!(
        edit_str(original, &[("CLAUDE_CONFIG_DIR", "/s/config")]).unwrap(),
        format!("{original}CLAUDE_CONFIG_DIR=/s/config\n")
    );
}

#[test]
fn no_final_newline_gets_one_before_appending() {
    assert_eq!(edit_str("FOO=1", &[("K", "v")]).unwrap(), "FOO=1\nK=v\n");
    // CRLF file without a final line ending: an LF, so bash still reads BAR as `2`.
    assert_eq!(
        edit_str("FOO=1\r\nBAR=2", &[("K", "v")]).unwrap(),
        "FOO=1\r\nBAR=2\nK=v\n"
    );
    assert_eq!(edit_str("# only", &[("K", "v")]).unwrap(), "# only\nK=v\n");
}

#[test]
fn crlf_file_gets_lf_on_the_lines_the_tool_writes() {
    // bash reads `K=new\r` as `new` plus CR: written and rewritten lines end in LF.
    let original = "A=1\r\nK=old\r\n# c\r\n";
    let got = edit_str(original, &[("K", "new"), ("Z", "z z")]).unwrap();
    assert_eq!(got, "A=1\r\nK=new\n# c\r\nZ='z z'\n");
    assert_eq!(bash_reads(got.as_bytes(), "K"), b"new");
    assert_eq!(bash_reads(got.as_bytes(), "Z"), b"z z");
    // A comment kept after the value keeps its CR (harmless there) and forces quotes.
    assert_eq!(
        edit_str("K=old # c\r\nB=2\n", &[("K", "v")]).unwrap(),
        "K='v' # c\nB=2\n"
    );
    assert_eq!(
        edit_str("A=1\nK=old\r\nB=2\n", &[("K", "new"), ("Z", "z")]).unwrap(),
        "A=1\nK=new\nB=2\nZ=z\n"
    );
}

#[test]
fn issue_minimal_crlf_cases() {
    // Issue 11 item 8, verbatim.
    let entries = [
        ("CLAUDE_SHARED_DIR", os("/t/s")),
        ("CLAUDE_CONFIG_DIR", os("/t/s/config")),
    ];
    let new = edit(b"# secrets\r\n", &entries).unwrap().unwrap();
    assert_eq!(
        new,
        b"# secrets\r\nCLAUDE_SHARED_DIR=/t/s\nCLAUDE_CONFIG_DIR=/t/s/config\n"
    );
    assert_eq!(bash_reads(&new, "CLAUDE_SHARED_DIR"), b"/t/s");
    assert_eq!(bash_reads(&new, "CLAUDE_CONFIG_DIR"), b"/t/s/config");

    let original = b"_PRIV=bare # trailing comment\r\n  _PRIV=\"${TOKEN}-x\"";
    let before = bash_reads(original, "_PRIV");
    assert_eq!(before, b"-x");
    let new = edit(original, &entries).unwrap().unwrap();
    assert_eq!(bash_reads(&new, "_PRIV"), before);
    assert_eq!(bash_reads(&new, "CLAUDE_SHARED_DIR"), b"/t/s");
    assert_eq!(read_values(&new).unwrap()["_PRIV"], "-x");
}

#[test]
fn read_back_ignores_the_process_environment() {
    // HOME and PATH are set in every test process: dotenvy proper fills `${HOME}` from it, the
    // factory's clean shell does not.
    let file = b"K=${HOME}/x\nP=$PATH\nHOME=/h\nL=${HOME}/y\n";
    let v = read_values(file).unwrap();
    assert_eq!(v["K"], "/x");
    assert_eq!(v["P"], "");
    assert_eq!(v["L"], "/h/y");
    // The issue's case: a reference placed before its definition is not "already right".
    let original = b"CLAUDE_CONFIG_DIR=${HOME}/config\nHOME=/s\n";
    let entries = [("CLAUDE_CONFIG_DIR", os("/s/config"))];
    assert_eq!(
        edit(original, &entries).unwrap().unwrap(),
        b"CLAUDE_CONFIG_DIR=/s/config\nHOME=/s\n"
    );
}

#[test]
fn stale_line_replaced_in_place_keeping_prefix_and_tail() {
    assert_eq!(
        edit_str("A=1\n  export K=old  # why\nB=2\n", &[("K", "/new")]).unwrap(),
        "A=1\n  export K='/new'  # why\nB=2\n"
    );
    assert_eq!(
        edit_str("\texport\tK = 'old value'\t\n", &[("K", "n")]).unwrap(),
        "\texport\tK=n\t\n"
    );
    assert_eq!(edit_str("K=\n", &[("K", "v")]).unwrap(), "K=v\n");
    assert_eq!(edit_str("K= # c\n", &[("K", "v")]).unwrap(), "K='v' # c\n");
    assert_eq!(edit_str("K=old", &[("K", "v")]).unwrap(), "K=v");
    // A multi-line quoted value is one entry.
    assert_eq!(
        edit_str("K='a\nb' # c\nX=1\n", &[("K", "v")]).unwrap(),
        "K='v' # c\nX=1\n"
    );
    // `export` itself as a key is not a prefix.
    assert_eq!(
        edit_str("export=1\nK=o\n", &[("K", "v")]).unwrap(),
        "export=1\nK=v\n"
    );
}

#[test]
fn duplicate_keys_only_last_is_replaced() {
    let got = edit_str("K=first\nA=1\nexport K=second\nB=2\n", &[("K", "new")]).unwrap();
    assert_eq!(got, "K=first\nA=1\nexport K=new\nB=2\n");
    assert_eq!(bash_reads(got.as_bytes(), "K"), b"new");
    // Last one already right: nothing to do even though an earlier one differs.
    assert_eq!(edit_str("K=old\nK=new\n", &[("K", "new")]), None);
}

#[test]
fn commented_out_lines_are_not_entries() {
    assert_eq!(
        edit_str("# K=old\n#K=old\n   # export K=old\n", &[("K", "v")]).unwrap(),
        "# K=old\n#K=old\n   # export K=old\nK=v\n"
    );
}

#[test]
fn substituted_value_already_right_is_left_alone() {
    // Whatever this process exports: the read-back is a clean environment's.
    let original = "CLAUDE_SHARED_DIR=/x\nCLAUDE_CONFIG_DIR=${CLAUDE_SHARED_DIR}/config\n";
    let entries = [
        ("CLAUDE_SHARED_DIR", os("/x")),
        ("CLAUDE_CONFIG_DIR", os("/x/config")),
    ];
    assert!(edit(original.as_bytes(), &entries).unwrap().is_none());
}

#[test]
fn substituted_value_already_right_unique_names() {
    let original = "DCI_T1_SHARED=/x\nDCI_T1_CONFIG=${DCI_T1_SHARED}/config\n";
    let entries = [
        ("DCI_T1_SHARED", os("/x")),
        ("DCI_T1_CONFIG", os("/x/config")),
    ];
    assert!(edit(original.as_bytes(), &entries).unwrap().is_none());
    // And a wrong one is replaced by a literal.
    let entries = [("DCI_T1_SHARED", os("/x")), ("DCI_T1_CONFIG", os("/y"))];
    assert_eq!(
        edit(original.as_bytes(), &entries).unwrap().unwrap(),
        b"DCI_T1_SHARED=/x\nDCI_T1_CONFIG=/y\n"
    );
}

#[test]
fn fixing_the_base_first_makes_the_reference_right() {
    let original = "DCI_T2_SHARED=/old\nDCI_T2_CONFIG=${DCI_T2_SHARED}/config\n";
    let entries = [
        ("DCI_T2_SHARED", os("/new")),
        ("DCI_T2_CONFIG", os("/new/config")),
    ];
    let new = edit(original.as_bytes(), &entries).unwrap().unwrap();
    assert_eq!(
        new,
        b"DCI_T2_SHARED=/new\nDCI_T2_CONFIG=${DCI_T2_SHARED}/config\n"
    );
    assert_eq!(edit(&new, &entries).unwrap(), None);
}

#[test]
fn reference_broken_by_a_later_edit_is_repaired() {
    // B refers to A; the caller fixes B first (kept, resolves), then A, which breaks B:
    // the second pass must turn B into a literal.
    let original = "DCI_T3_A=/a\nDCI_T3_B=${DCI_T3_A}/b\n";
    let entries = [("DCI_T3_B", os("/a/b")), ("DCI_T3_A", os("/z"))];
    let new = edit(original.as_bytes(), &entries).unwrap().unwrap();
    assert_eq!(new, b"DCI_T3_A=/z\nDCI_T3_B=/a/b\n");
    assert_eq!(edit(&new, &entries).unwrap(), None);
}

#[test]
fn already_right_returns_none_for_many_spellings() {
    for f in [
        "K=/v\n",
        "K='/v'\n",
        "K=\"/v\"\n",
        "export K=/v # c\n",
        "K=/v",
    ] {
        assert_eq!(edit_str(f, &[("K", "/v")]), None, "{f:?}");
    }
}

#[test]
fn idempotent_across_shapes() {
    for f in [
        "",
        "A=1",
        "A=1\r\n",
        "K=o\nK=p\n",
        "# K=x\n",
        "export K='a b'  # c",
    ] {
        let entries = [("K", os("it's x")), ("L", os("/plain"))];
        let once = edit(f.as_bytes(), &entries).unwrap().unwrap();
        assert_eq!(edit(&once, &entries).unwrap(), None, "{f:?}");
    }
}

#[test]
fn bom_is_kept_and_skipped() {
    let original = "\u{feff}A=1\nK=old\n";
    assert_eq!(
        edit_str(original, &[("K", "v"), ("N", "n")]).unwrap(),
        "\u{feff}A=1\nK=v\nN=n\n"
    );
    assert_eq!(read_values(original.as_bytes()).unwrap()["A"], "1");
}

#[test]
fn read_values_last_wins_and_substitutes() {
    let v = read_values(b"DCI_T4=a\nDCI_T4=b\nDCI_T4_X=${DCI_T4}/c\n").unwrap();
    assert_eq!(v["DCI_T4"], "b");
    assert_eq!(v["DCI_T4_X"], "b/c");
}

#[test]
fn non_utf8_value_is_an_error() {
    let bad = OsStr::from_bytes(b"/srv/caf\xe9");
    let err = edit(b"A=1\n", &[("K", bad)]).unwrap_err();
    assert!(matches!(&err, EnvFileError::ValueNotUtf8 { key, .. } if key == "K"));
    assert!(err.to_string().contains("not valid UTF-8"), "{err}");
}

#[test]
fn nul_value_and_bad_key_are_errors() {
    assert!(matches!(
        edit(b"", &[("K", os("a\0b"))]).unwrap_err(),
        EnvFileError::ValueHasNul { .. }
    ));
    for k in ["", "1A", "A-B", "A.B", "A B"] {
        assert!(
            matches!(
                edit(b"", &[(k, os("v"))]).unwrap_err(),
                EnvFileError::InvalidKey { .. }
            ),
            "{k:?}"
        );
    }
}

#[test]
fn non_utf8_file_is_an_error_with_line() {
    let err = read_values(b"A=1\nB=2\nC=\xff\n").unwrap_err();
    assert!(
        matches!(err, EnvFileError::FileNotUtf8 { line: 3 }),
        "{err:?}"
    );
    assert!(edit(b"A=1\nB=\xfe\n", &[("K", os("v"))]).is_err());
}

#[test]
fn unparseable_file_names_the_line_and_not_the_secret() {
    let err = read_values(b"A=1\n\n# c\nTOKEN=sec ret\nB=2\n").unwrap_err();
    match &err {
        EnvFileError::Parse { line, key } => {
            assert_eq!(*line, Some(4));
            assert_eq!(key.as_deref(), Some("TOKEN"));
        }
        other => panic!("{other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("line 4") && msg.contains("TOKEN"), "{msg}");
    assert!(!msg.contains("sec"), "secret leaked: {msg}");

    let err = read_values(b"A=1\nB='open\nC=2\n").unwrap_err();
    assert!(
        matches!(err, EnvFileError::Parse { line: Some(2), .. }),
        "{err:?}"
    );
    let err = read_values(b"just words\n").unwrap_err();
    assert!(
        matches!(err, EnvFileError::Parse { line: Some(1), .. }),
        "{err:?}"
    );
    assert!(edit(b"A=1\nnot an entry\n", &[("K", os("v"))]).is_err());
}

#[test]
fn value_token_follows_dotenvy_quirks() {
    // Checked against dotenvy: the kept tail after the new value must be what dotenvy
    // treated as trailing space/comment, whatever the old value looked like.
    for (old, tail) in [
        ("K=a #c\n", " #c\n"),
        ("K=a#b\n", "\n"),
        ("K='x y' #c\n", " #c\n"),
        ("K=\"x \\\" y\"  \n", "  \n"),
        ("K=a\\ b #c\n", " #c\n"),
        ("K=${DCI_T5 X} #c\n", " #c\n"),
        ("K=$DCIqT5 b #c\n", " #c\n"),
    ] {
        assert!(read_values(old.as_bytes()).is_ok(), "{old:?}");
        assert_eq!(
            edit_str(old, &[("K", "n")]).unwrap(),
            if tail.trim().is_empty() {
                format!("K=n{tail}")
            } else {
                format!("K='n'{tail}")
            },
            "{old:?}"
        );
    }
}

#[test]
fn entries_dotenvy_reads_right_but_bash_does_not_are_rewritten() {
    for (original, expected) in [
        // bash reads `/s` plus CR.
        ("K=/s\r\nA=1\r\n", "K=/s\nA=1\r\n"),
        ("K=/s  \r\n", "K=/s  \n"),
        // `$CLAUDE` then `_X`: dotenvy's name ends at `_`; bash reads the whole name.
        ("DCI_T6=/s\nK=$DCI_T6\n", "DCI_T6=/s\nK=/s\n"),
        // Spaces around `=`: dotenvy's syntax, a command to bash.
        ("  K = /s\r\n", "  K=/s\n"),
        ("K= /s\n", "K=/s\n"),
    ] {
        let got = edit_str(original, &[("K", "/s")]);
        assert_eq!(got.as_deref(), Some(expected), "{original:?}");
        assert_eq!(bash_reads(expected.as_bytes(), "K"), b"/s", "{expected:?}");
    }
    for kept in [
        "K=/s # c\r\n",
        "K='/s'\n",
        "K=\"/s\"\n",
        "B=/\nK=${B}s\n",
        "B=/\nK=\"${B}s\"\n",
    ] {
        assert_eq!(edit_str(kept, &[("K", "/s")]), None, "{kept:?}");
        assert_eq!(bash_reads(kept.as_bytes(), "K"), b"/s", "{kept:?}");
    }
}

#[test]
fn entry_behind_a_bom_is_appended_not_rewritten() {
    // bash runs `\u{feff}K=old` as a command (not found): K stays unset for it.
    let original = "\u{feff}K=old\nA=1\n";
    let got = edit_str(original, &[("K", "/s")]).unwrap();
    assert_eq!(got, "\u{feff}K=old\nA=1\nK=/s\n");
    // (bash's view, with its "command not found" for the BOM line, is checked by
    // tests/env_readers.rs, whose generator writes BOMs.)
    assert_eq!(read_values(got.as_bytes()).unwrap()["K"], "/s");
    assert_eq!(edit_str(&got, &[("K", "/s")]), None);
    // Already right for dotenvy, but not for bash.
    let got = edit_str("\u{feff}K=/s\n", &[("K", "/s")]).unwrap();
    assert_eq!(got, "\u{feff}K=/s\nK=/s\n");
}

#[test]
fn a_kept_reference_must_resolve_alike_too() {
    // dotenvy sees S=/t/s on the BOM line; bash does not, so `${S}/config` is `/config` to it.
    let original = "\u{feff}S=/t/s\nC=${S}/config\n";
    let got = edit_str(original, &[("S", "/t/s"), ("C", "/t/s/config")]).unwrap();
    assert_eq!(got, "\u{feff}S=/t/s\nC=/t/s/config\nS=/t/s\n");
    // A CR after the referenced value: bash reads `/t/s` CR `/config`.
    let got = edit_str("S=/t/s\r\nC=${S}/config\n", &[("C", "/t/s/config")]).unwrap();
    assert_eq!(got, "S=/t/s\r\nC=/t/s/config\n");
    assert_eq!(bash_reads(got.as_bytes(), "C"), b"/t/s/config");
    // Both readers alike all the way down: kept.
    assert_eq!(
        edit_str("S=/t/s\nC=${S}/config\n", &[("C", "/t/s/config")]),
        None
    );
    // An undefined name is empty to both.
    assert_eq!(edit_str("C=${DCI_T7_NONE}/c\n", &[("C", "/c")]), None);
}
