//! Editing `KEY=value` entries of a dotenv file without disturbing anything else in it.
//!
//! The factory's `.env` holds secrets (forge tokens) and is read by two different parsers: the
//! Rust side (dotenvy) and bash (`set -a; source .env`). The predecessor edited it with `sed`,
//! which broke on values containing `|` or `&`. Here the file is treated as bytes that belong to
//! the operator: only the one entry that has to change is touched, in place, and every value we
//! write is quoted so that both parsers read back exactly the same string. Every edit is checked
//! by reading the result back with dotenvy before it is returned.
//!
//! Error messages never quote lines of the file: they may hold secrets.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};

/// UTF-8 byte order mark; `dotenvy::from_path` skips it, so reading must too.
const BOM: &str = "\u{feff}";

/// What can go wrong reading or editing an env file.
#[derive(Debug, thiserror::Error)]
pub enum EnvFileError {
    /// The file itself is not UTF-8: dotenvy refuses it, so neither the factory nor this tool can
    /// read its values.
    #[error(
        "the env file is not valid UTF-8 (first bad byte on line {line}): dotenv files are UTF-8 \
         text, so its values cannot be read and it cannot be edited safely; re-encode or fix that \
         line, or leave the env file out (--no-env-file)"
    )]
    FileNotUtf8 {
        /// 1-based line of the first invalid byte.
        line: usize,
    },

    /// dotenvy cannot parse the file: whatever we would write, the factory could not read it.
    #[error(
        "the env file cannot be parsed as dotenv{}{}: the factory reads it with the same parser, \
         so it would not see the values either; fix that line (unbalanced quote, stray text \
         after a value, an unknown backslash escape...) and run again",
        at_line(.line),
        for_key(.key)
    )]
    Parse {
        /// 1-based first physical line of the offending entry, when it could be located.
        line: Option<usize>,
        /// The entry's key, when the line got that far. The value is never reported (secrets).
        key: Option<String>,
    },

    /// A value we were asked to write is not UTF-8 (a path with such bytes).
    #[error(
        "cannot write {key}: its value {value:?} is not valid UTF-8, and a dotenv file can only \
         hold UTF-8 text, so the factory would read a different path; use a path that is valid \
         UTF-8, or leave the env file out (--no-env-file) and set {key} another way"
    )]
    ValueNotUtf8 {
        /// The variable name.
        key: String,
        /// The value as given.
        value: OsString,
    },

    /// A value contains a NUL byte: no shell variable or process environment can hold one.
    #[error(
        "cannot write {key}: its value contains a NUL byte, which bash and the process \
         environment cannot represent; this is a bug in the caller or a corrupt path"
    )]
    ValueHasNul {
        /// The variable name.
        key: String,
    },

    /// A key that bash could not assign (`[A-Za-z_][A-Za-z0-9_]*`).
    #[error(
        "cannot write {key:?}: not a valid variable name (letters, digits and `_`, not starting \
         with a digit), so `source`-ing the file would fail; this is a bug in the caller"
    )]
    InvalidKey {
        /// The rejected name.
        key: String,
    },

    /// Our own edit did not read back as intended: refuse rather than write something wrong.
    #[error(
        "internal error: after setting {key} to {wanted:?} the env file reads back {got:?}; \
         nothing was written; please report this with the shape (not the secrets) of the file"
    )]
    ReadBack {
        /// The variable name.
        key: String,
        /// The value we meant to write.
        wanted: String,
        /// What dotenvy read back (None: the key was missing).
        got: Option<String>,
    },
}

fn at_line(line: &Option<usize>) -> String {
    line.map(|l| format!(" at line {l}")).unwrap_or_default()
}

fn for_key(key: &Option<String>) -> String {
    key.as_ref()
        .map(|k| format!(" (entry {k})"))
        .unwrap_or_default()
}

/// Values as dotenvy reads them (with its `${VAR}` substitution), from the file's bytes.
///
/// This is deliberately dotenvy itself, not a re-implementation: the tool must agree with how
/// the factory's Rust side reads the file. That includes dotenvy's rule that a `${VAR}` reference
/// is resolved from the *process environment first* and only then from earlier entries of the
/// file. When a key appears several times the last occurrence wins (as in bash). A leading UTF-8
/// BOM is skipped, as `dotenvy::from_path` does.
pub fn read_values(bytes: &[u8]) -> Result<BTreeMap<String, String>, EnvFileError> {
    let text = std::str::from_utf8(bytes).map_err(|e| EnvFileError::FileNotUtf8 {
        line: 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count(),
    })?;
    let body = text.strip_prefix(BOM).unwrap_or(text);
    let mut map = BTreeMap::new();
    for item in dotenvy::from_read_iter(body.as_bytes()) {
        match item {
            Ok((k, v)) => {
                map.insert(k, v);
            }
            Err(_) => return Err(locate_parse_error(body)),
        }
    }
    Ok(map)
}

/// Find which entry dotenvy choked on, by parsing each logical line on its own (parse errors do
/// not depend on substitution data). dotenvy's own error carries the line text, which may hold a
/// secret, so it is not passed on.
fn locate_parse_error(body: &str) -> EnvFileError {
    for l in logical_lines(body) {
        if l.comment {
            continue;
        }
        let chunk = &body[l.start..l.end];
        if dotenvy::from_read_iter(chunk.as_bytes()).any(|r| r.is_err()) {
            return EnvFileError::Parse {
                line: Some(l.first_line),
                key: leading_key(&body[l.start..l.parse_end]),
            };
        }
    }
    EnvFileError::Parse {
        line: None,
        key: None,
    }
}

/// Quote a value so that BOTH dotenvy and bash `source` read back exactly `value`.
///
/// Values made only of `[A-Za-z0-9_./:@%+,-]` (and non-empty) are written bare: both parsers
/// take them literally. Everything else is single-quoted, POSIX style: single quotes are literal
/// in both (no `$` substitution, no escapes), a `'` in the value becomes `'\''` (close, escaped
/// quote, reopen), which both read as one `'`. Double quotes are never used: bash needs a
/// backtick escaped there and dotenvy rejects `` \` ``, so no double-quoted form works for both.
///
/// One dotenvy quirk needs care: its line joiner treats a backslash inside single quotes as
/// escaping the next character, so `'a\'` would look unterminated to it. Trailing backslashes of
/// each quoted run are therefore written outside the quotes as `\\` (a literal backslash in both).
/// Newlines are kept literally inside the quotes; both parsers accept multi-line quoted values.
///
/// A NUL byte cannot be represented for bash at all; `edit` rejects such values before quoting.
pub fn quote_value(value: &str) -> String {
    if !value.is_empty() && value.bytes().all(is_bare) {
        return value.to_owned();
    }
    let mut out = String::with_capacity(value.len() + 2);
    for (i, piece) in value.split('\'').enumerate() {
        if i > 0 {
            out.push_str("\\'");
        }
        let quoted = piece.trim_end_matches('\\');
        if !quoted.is_empty() {
            out.push('\'');
            out.push_str(quoted);
            out.push('\'');
        }
        for _ in 0..piece.len() - quoted.len() {
            out.push_str("\\\\");
        }
    }
    if out.is_empty() {
        out.push_str("''");
    }
    out
}

fn is_bare(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"_./:@%+,-".contains(&b)
}

fn is_valid_key(key: &str) -> bool {
    let mut bytes = key.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Set each (key, value). Returns Ok(None) when nothing needs to change (every key already
/// resolves, as read by `read_values`, to exactly its wanted value), else the new file bytes.
///
/// Entries are applied in order and the file is re-read after each one, so fixing
/// `CLAUDE_SHARED_DIR` first can make an existing `CLAUDE_CONFIG_DIR=${CLAUDE_SHARED_DIR}/config`
/// right without touching it (the operator's indirection is kept).
///
/// A stale key has its *last* occurrence (the one both dotenvy and bash end up with) rewritten in
/// place: its leading whitespace, `export ` prefix, any trailing whitespace or `# comment` and its
/// line ending are kept; only `=value` (with any spaces around the `=`) is replaced. A missing key
/// is appended as `KEY=value` with the file's line ending style (CRLF when most lines use it),
/// after adding a line ending if the file lacks a final one. No other byte changes.
pub fn edit(original: &[u8], entries: &[(&str, &OsStr)]) -> Result<Option<Vec<u8>>, EnvFileError> {
    let mut wanted: Vec<(&str, &str)> = Vec::with_capacity(entries.len());
    for &(key, value) in entries {
        if !is_valid_key(key) {
            return Err(EnvFileError::InvalidKey {
                key: key.to_owned(),
            });
        }
        let v = value.to_str().ok_or_else(|| EnvFileError::ValueNotUtf8 {
            key: key.to_owned(),
            value: value.to_owned(),
        })?;
        if v.contains('\0') {
            return Err(EnvFileError::ValueHasNul {
                key: key.to_owned(),
            });
        }
        wanted.push((key, v));
    }

    read_values(original)?; // UTF-8 and parseable, or an error naming the line
    let mut text = String::from_utf8(original.to_vec()).expect("checked by read_values");

    // Rewriting a key can change how an earlier-kept `${KEY}` reference of another wanted key
    // resolves; each pass turns at least one more key into a literal, so len+1 passes settle.
    for _ in 0..=wanted.len() {
        let mut changed = false;
        for &(key, value) in &wanted {
            if read_values(text.as_bytes())?.get(key).map(String::as_str) == Some(value) {
                continue;
            }
            text = set_one(&text, key, &quote_value(value));
            changed = true;
            let got = read_values(text.as_bytes())?.remove(key);
            if got.as_deref() != Some(value) {
                return Err(EnvFileError::ReadBack {
                    key: key.to_owned(),
                    wanted: value.to_owned(),
                    got,
                });
            }
        }
        if !changed {
            break;
        }
    }
    let values = read_values(text.as_bytes())?;
    for &(key, value) in &wanted {
        if values.get(key).map(String::as_str) != Some(value) {
            return Err(EnvFileError::ReadBack {
                key: key.to_owned(),
                wanted: value.to_owned(),
                got: values.get(key).cloned(),
            });
        }
    }

    Ok((text.as_bytes() != original).then(|| text.into_bytes()))
}

/// Rewrite the last entry for `key` in place, or append one.
fn set_one(text: &str, key: &str, quoted: &str) -> String {
    let body_off = if text.starts_with(BOM) { BOM.len() } else { 0 };
    let body = &text[body_off..];
    let last = logical_lines(body)
        .iter()
        .rev()
        .filter_map(|l| entry_span(body, l))
        .find(|e| e.key == key);
    let mut out = String::with_capacity(text.len() + key.len() + quoted.len() + 3);
    match last {
        Some(e) => {
            out.push_str(&text[..body_off + e.key_end]);
            out.push('=');
            out.push_str(quoted);
            out.push_str(&text[body_off + e.token_end..]);
        }
        None => {
            let eol = line_ending(body);
            out.push_str(text);
            if !body.is_empty() && !body.ends_with('\n') {
                out.push_str(eol);
            }
            out.push_str(key);
            out.push('=');
            out.push_str(quoted);
            out.push_str(eol);
        }
    }
    out
}

/// CRLF when more lines end in CRLF than in a bare LF, else LF.
fn line_ending(body: &str) -> &'static str {
    let crlf = body.matches("\r\n").count();
    let lf = body.matches('\n').count() - crlf;
    if crlf > lf {
        "\r\n"
    } else {
        "\n"
    }
}

/// One dotenvy "line": one or more physical lines (a quoted value may span several).
#[derive(Debug)]
struct Logical {
    /// Byte offset of its first byte.
    start: usize,
    /// End of the text dotenvy's line parser gets: before the line ending, or at an inline
    /// comment its line joiner cuts off.
    parse_end: usize,
    /// Byte offset after its last line ending (or end of file).
    end: usize,
    /// 1-based number of its first physical line.
    first_line: usize,
    /// Whole line is a comment (dotenvy skips it).
    comment: bool,
}

/// Port of dotenvy 0.15's `QuotedLines` line joiner (iter.rs): where one entry ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum JoinState {
    Complete,
    Escape,
    StrongOpen,
    StrongOpenEscape,
    WeakOpen,
    WeakOpenEscape,
    Comment,
    WhiteSpace,
}

fn eval_end_state(prev: JoinState, seg: &str) -> (usize, JoinState) {
    use JoinState::*;
    let mut st = prev;
    let mut cur = 0;
    for (pos, c) in seg.char_indices() {
        cur = pos;
        st = match st {
            WhiteSpace => match c {
                '#' => return (cur, Comment),
                '\\' => Escape,
                '"' => WeakOpen,
                '\'' => StrongOpen,
                _ => Complete,
            },
            Escape => Complete,
            Complete => match c {
                c if c.is_whitespace() && c != '\n' && c != '\r' => WhiteSpace,
                '\\' => Escape,
                '"' => WeakOpen,
                '\'' => StrongOpen,
                _ => Complete,
            },
            WeakOpen => match c {
                '\\' => WeakOpenEscape,
                '"' => Complete,
                _ => WeakOpen,
            },
            WeakOpenEscape => WeakOpen,
            StrongOpen => match c {
                '\\' => StrongOpenEscape,
                '\'' => Complete,
                _ => StrongOpen,
            },
            StrongOpenEscape => StrongOpen,
            Comment => unreachable!("returned early"),
        };
    }
    (cur, st)
}

fn logical_lines(body: &str) -> Vec<Logical> {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut line_no = 1;
    while pos < body.len() {
        let start = pos;
        let first_line = line_no;
        let mut state = JoinState::Complete;
        loop {
            let phys_end = body[pos..].find('\n').map_or(body.len(), |i| pos + i + 1);
            let seg = &body[pos..phys_end];
            if seg.ends_with('\n') {
                line_no += 1;
            }
            let term_start = phys_end
                - if seg.ends_with("\r\n") {
                    2
                } else {
                    usize::from(seg.ends_with('\n'))
                };
            let mut push = |parse_end, comment| {
                out.push(Logical {
                    start,
                    parse_end,
                    end: phys_end,
                    first_line,
                    comment,
                })
            };
            if body[start..phys_end].trim_start().starts_with('#') {
                push(term_start, true);
                pos = phys_end;
                break;
            }
            let (cut, st) = eval_end_state(state, seg);
            state = st;
            match state {
                JoinState::Complete => {
                    push(term_start, false);
                    pos = phys_end;
                    break;
                }
                JoinState::Comment => {
                    push(pos + cut, false);
                    pos = phys_end;
                    break;
                }
                _ if phys_end == body.len() => {
                    // Unterminated at end of file: dotenvy reports an error for it.
                    push(term_start, false);
                    pos = phys_end;
                    break;
                }
                _ => pos = phys_end,
            }
        }
    }
    out
}

/// Where an entry's key ends and its value token ends, offsets into the body.
struct EntrySpan {
    key: String,
    /// After the key name (after `export KEY`): what precedes is kept.
    key_end: usize,
    /// After the value token: what follows (spaces, `# comment`, line ending) is kept.
    token_end: usize,
}

fn skip_ws(s: &str, i: usize) -> usize {
    s[i..]
        .find(|c: char| !c.is_whitespace())
        .map_or(s.len(), |n| i + n)
}

fn key_len(s: &str) -> usize {
    if !s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        return 0;
    }
    s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(s.len())
}

/// The key of a line, as far as it can be read (for error messages).
fn leading_key(line: &str) -> Option<String> {
    let i = skip_ws(line, 0);
    let n = key_len(&line[i..]);
    (n > 0).then(|| line[i..i + n].to_owned())
}

/// Mirror of dotenvy's `LineParser` (parse.rs) up to the value, then of `parse_value` to find
/// where the value token stops. Only called on files dotenvy parsed without error.
fn entry_span(body: &str, l: &Logical) -> Option<EntrySpan> {
    if l.comment {
        return None;
    }
    let s = body[l.start..l.parse_end].trim_end();
    let mut i = skip_ws(s, 0);
    let mut n = key_len(&s[i..]);
    if n == 0 {
        return None;
    }
    let mut key = &s[i..i + n];
    let mut j = skip_ws(s, i + n);
    if key == "export" && !s[j..].starts_with('=') {
        i = j;
        n = key_len(&s[i..]);
        if n == 0 {
            return None;
        }
        key = &s[i..i + n];
        j = skip_ws(s, i + n);
    }
    if !s[j..].starts_with('=') {
        return None;
    }
    let eq_end = j + 1;
    let v = skip_ws(s, eq_end);
    let token_end = if v == s.len() || s[v..].starts_with('#') {
        eq_end // empty value: keep whatever spacing and comment follow the `=`
    } else {
        v + value_token_len(&s[v..])
    };
    Some(EntrySpan {
        key: key.to_owned(),
        key_end: l.start + i + n,
        token_end: l.start + token_end,
    })
}

/// Length of the value token as dotenvy's `parse_value` consumes it: up to the first unquoted,
/// unescaped space or tab outside a `$` substitution, or the whole input.
fn value_token_len(input: &str) -> usize {
    #[derive(PartialEq)]
    enum Sub {
        None,
        Block,
        Escaped,
    }
    let (mut strong, mut weak, mut escaped) = (false, false, false);
    let mut sub = Sub::None;
    let mut name_empty = true;
    for (i, c) in input.char_indices() {
        if escaped {
            escaped = false;
        } else if strong {
            strong = c != '\'';
        } else if sub != Sub::None {
            if c.is_alphanumeric() {
                name_empty = false;
            } else if sub == Sub::Block {
                if c == '{' && name_empty {
                    sub = Sub::Escaped;
                } else {
                    // dotenvy ends `$NAME` here and takes `c` literally, even a quote or space.
                    name_empty = true;
                    if c != '$' {
                        sub = Sub::None;
                    }
                }
            } else if c == '}' {
                sub = Sub::None;
                name_empty = true;
            } else {
                name_empty = false;
            }
        } else if c == '$' {
            sub = Sub::Block;
            name_empty = true;
        } else if weak {
            if c == '"' {
                weak = false;
            } else if c == '\\' {
                escaped = true;
            }
        } else if c == '\'' {
            strong = true;
        } else if c == '"' {
            weak = true;
        } else if c == '\\' {
            escaped = true;
        } else if c == ' ' || c == '\t' {
            return i;
        }
    }
    input.len()
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn quote_value_exact_forms() {
        assert_eq!(
            quote_value("/var/lib/disinto/claude-shared"),
            "/var/lib/disinto/claude-shared"
        );
        assert_eq!(quote_value("a-b_c.d:e@f%g+h,i"), "a-b_c.d:e@f%g+h,i");
        assert_eq!(quote_value(""), "''");
        assert_eq!(quote_value("a b"), "'a b'");
        assert_eq!(quote_value("$X"), "'$X'");
        assert_eq!(quote_value("it's"), "'it'\\''s'");
        assert_eq!(quote_value("'"), "\\'");
        assert_eq!(quote_value("a\\"), "'a'\\\\");
        assert_eq!(quote_value("a\\b"), "'a\\b'");
        assert_eq!(quote_value("\\"), "\\\\");
        assert_eq!(quote_value("x'\\"), "'x'\\'\\\\");
    }

    #[test]
    fn quote_round_trips_through_dotenvy() {
        for v in NASTY {
            let file = format!("K={}\nNEXT=after\n", quote_value(v));
            let got = read_values(file.as_bytes()).unwrap_or_else(|e| panic!("{v:?}: {e}"));
            assert_eq!(got.get("K").map(String::as_str), Some(*v), "file: {file:?}");
            // The entry must not swallow the next line (unterminated quote to dotenvy).
            assert_eq!(
                got.get("NEXT").map(String::as_str),
                Some("after"),
                "{file:?}"
            );
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
        for v in NASTY {
            let file = format!("K={}\nNEXT=after\n", quote_value(v));
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
        for v in NASTY {
            let file = format!("K={}\nNEXT=after\n", quote_value(v));
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
        for v in NASTY {
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
            let q = quote_value(v);
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
            "a\\b",
            "a`b",
            "a;b",
            "/p/x y/#1/'q'/\"d\"/$v/|/&/\\/`/;",
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
        assert_eq!(
            edit_str("FOO=1\r\nBAR=2", &[("K", "v")]).unwrap(),
            "FOO=1\r\nBAR=2\r\nK=v\r\n"
        );
        assert_eq!(edit_str("# only", &[("K", "v")]).unwrap(), "# only\nK=v\n");
    }

    #[test]
    fn crlf_file_keeps_crlf_everywhere() {
        let original = "A=1\r\nK=old\r\n# c\r\n";
        assert_eq!(
            edit_str(original, &[("K", "new"), ("Z", "z z")]).unwrap(),
            "A=1\r\nK=new\r\n# c\r\nZ='z z'\r\n"
        );
        // Mixed: replaced lines keep their own ending; appends follow the majority.
        assert_eq!(
            edit_str("A=1\nK=old\r\nB=2\n", &[("K", "new"), ("Z", "z")]).unwrap(),
            "A=1\nK=new\r\nB=2\nZ=z\n"
        );
    }

    #[test]
    fn stale_line_replaced_in_place_keeping_prefix_and_tail() {
        assert_eq!(
            edit_str("A=1\n  export K=old  # why\nB=2\n", &[("K", "/new")]).unwrap(),
            "A=1\n  export K=/new  # why\nB=2\n"
        );
        assert_eq!(
            edit_str("\texport\tK = 'old value'\t\n", &[("K", "n")]).unwrap(),
            "\texport\tK=n\t\n"
        );
        assert_eq!(edit_str("K=\n", &[("K", "v")]).unwrap(), "K=v\n");
        assert_eq!(edit_str("K= # c\n", &[("K", "v")]).unwrap(), "K=v # c\n");
        assert_eq!(edit_str("K=old", &[("K", "v")]).unwrap(), "K=v");
        // A multi-line quoted value is one entry.
        assert_eq!(
            edit_str("K='a\nb' # c\nX=1\n", &[("K", "v")]).unwrap(),
            "K=v # c\nX=1\n"
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
        let original = "CLAUDE_SHARED_DIR=/x\nCLAUDE_CONFIG_DIR=${CLAUDE_SHARED_DIR}/config\n";
        if std::env::var_os("CLAUDE_SHARED_DIR").is_some() {
            eprintln!("skip: CLAUDE_SHARED_DIR is set in this process, dotenvy resolves it first");
            return;
        }
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
            "  K = /v\r\n",
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
            let entries = [("K", os("it's $x")), ("L", os("/plain"))];
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
                format!("K=n{tail}"),
                "{old:?}"
            );
        }
    }
}
