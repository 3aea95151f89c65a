//! Editing `KEY=value` entries of a dotenv file without disturbing anything else in it.
//!
//! The factory's `.env` holds secrets (forge tokens) and is read by several parsers: the Rust side
//! (dotenvy 0.15), bash (`set -a; source .env`), and docker compose (compose-go's dotenv parser)
//! for the compose file's `${...}`. The predecessor edited it with `sed`, which broke on values
//! containing `|` or `&`. Here the file is treated as bytes that belong to the operator: only the
//! one entry that has to change is touched, in place, and every value we write is quoted so that
//! every reader reads back exactly the same string; a value no single spelling serves is refused
//! (`EnvFileError::Unquotable`). Every edit is checked by reading the result back as the factory
//! will, in a clean environment and in file order (`read_values`), before it is returned.
//!
//! Line ends: every line the tool writes ends in a bare LF, even in a CRLF file. bash takes a
//! carriage return before the LF as part of the value (`K=v\r\n` sets `v` plus CR), while dotenvy,
//! compose and python-dotenv accept either ending, so LF is the one ending every reader reads
//! alike; a CRLF file thus becomes mixed, and each unrelated line keeps its bytes.
//!
//! Error messages never quote lines of the file: they may hold secrets.

mod dotenv;

use dotenv::{entry_span, leading_key, logical_lines};
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

    /// A value no quoting makes bash, dotenvy and docker compose read alike.
    #[error(
        "cannot write {key}={value:?} to the env file: {why}, and no quoting of such a value reads \
         back the same in bash (`source .env`), dotenvy and docker compose (which all read the \
         factory's .env); choose a path without it (for example --shared-dir \
         /var/lib/disinto/claude-shared), or leave the env file out (--no-env-file) and set {key} \
         another way"
    )]
    Unquotable {
        /// The variable name.
        key: String,
        /// The value as given.
        value: String,
        /// Which character(s) make it unquotable.
        why: &'static str,
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

/// Values as the factory reads them from the file's bytes: dotenvy 0.15's syntax and
/// `${VAR}` substitution, in a clean environment and in file order.
///
/// dotenvy itself decides whether the file parses (an error names the line, never its text). The
/// values come from `dotenv::parse_clean`, a port of dotenvy's line parser whose `${VAR}` is
/// filled only from earlier entries of the file: dotenvy proper looks in the reading process's
/// environment first, so run with `CLAUDE_SHARED_DIR` exported, a
/// `CLAUDE_CONFIG_DIR=${CLAUDE_SHARED_DIR}/config` line placed *before* the definition would read
/// back right here and as `/config` in the factory's clean shell. When a key appears several
/// times the last occurrence wins (as in bash). A leading UTF-8 BOM is skipped, as
/// `dotenvy::from_path` does.
pub fn read_values(bytes: &[u8]) -> Result<BTreeMap<String, String>, EnvFileError> {
    let text = std::str::from_utf8(bytes).map_err(|e| EnvFileError::FileNotUtf8 {
        line: 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count(),
    })?;
    let body = text.strip_prefix(BOM).unwrap_or(text);
    if dotenvy::from_read_iter(body.as_bytes()).any(|item| item.is_err()) {
        return Err(locate_parse_error(body));
    }
    let entries = dotenv::parse_clean(body).ok_or_else(|| locate_parse_error(body))?;
    Ok(entries.into_iter().collect())
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

/// The spelling of `value` that bash `source`, dotenvy, docker compose (compose-go's dotenv
/// parser) and python-dotenv all read back as exactly `value`, or why there is none.
///
/// - Made only of `[A-Za-z0-9_./:@%+,-]` (and non-empty): bare, unless `quoted` is asked for (a
///   kept `# comment` after the value: compose only ends a bare value at ` #`, not at a tab).
/// - Else, without `'` or `\`: single-quoted. Nothing inside single quotes is special to any of
///   the four (compose and python-dotenv give `\` a meaning there, hence no `\`).
/// - Else, with `'` but none of `"`, `$`, `` ` ``, `\`: double-quoted. In double quotes these four
///   are special to all the readers, each in its own way; nothing else is.
/// - Anything else (a `\` anywhere, or `'` together with `"`, `$` or `` ` ``): `Err`, naming the
///   character(s). bash's `'\''` is not read by compose (it ends the value at the second quote)
///   nor by python-dotenv (it drops the key): no spelling is read alike.
pub fn quote_value(value: &str, quoted: bool) -> Result<String, &'static str> {
    if !quoted && !value.is_empty() && value.bytes().all(is_bare) {
        return Ok(value.to_owned());
    }
    if value.contains('\\') {
        return Err("it contains a backslash");
    }
    if !value.contains('\'') {
        return Ok(format!("'{value}'"));
    }
    if value.contains(['"', '$', '`']) {
        return Err("it contains a single quote together with a double quote, `$` or a backtick");
    }
    Ok(format!("\"{value}\""))
}

/// Check that (`key`, `value`) can be written by `edit`: a valid name and a UTF-8 value without
/// NUL that `quote_value` can spell. For callers that want to refuse such a path up front (exit 2)
/// rather than at the step that writes the file.
pub fn check_entry<'a>(key: &str, value: &'a OsStr) -> Result<&'a str, EnvFileError> {
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
    quote_value(v, false).map_err(|why| EnvFileError::Unquotable {
        key: key.to_owned(),
        value: v.to_owned(),
        why,
    })?;
    Ok(v)
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
/// place: its leading whitespace, `export ` prefix and any trailing whitespace or `# comment` are
/// kept; only `=value` (with any spaces around the `=`) is replaced, and a CRLF ending of that
/// line becomes LF (bash would read the CR into the value). A missing key is appended as
/// `KEY=value` and LF, after adding an LF if the file lacks a final line ending. No other byte
/// changes: see the module doc for why every line the tool writes ends in LF.
pub fn edit(original: &[u8], entries: &[(&str, &OsStr)]) -> Result<Option<Vec<u8>>, EnvFileError> {
    let mut wanted: Vec<(&str, &str)> = Vec::with_capacity(entries.len());
    for &(key, value) in entries {
        wanted.push((key, check_entry(key, value)?));
    }

    read_values(original)?; // UTF-8 and parseable, or an error naming the line
    let mut text = String::from_utf8(original.to_vec()).expect("checked by read_values");

    // Rewriting a key can change how an earlier-kept `${KEY}` reference of another wanted key
    // resolves; each pass turns at least one more key into a literal, so len+1 passes settle.
    for _ in 0..=wanted.len() {
        let mut changed = false;
        for &(key, value) in &wanted {
            if read_values(text.as_bytes())?.get(key).map(String::as_str) == Some(value)
                && every_reader_reads_alike(&text, key)
            {
                continue;
            }
            text = set_one(&text, key, value);
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

/// Whether the entry for `key` that the readers end up with (its last one) is spelled so that bash
/// reads what dotenvy reads: `KEY=` with no space before the `=`, no carriage return right after the value (bash would take it into
/// the value, or run it as a command after a space), and a value token in the dialect both share:
/// bare `[A-Za-z0-9_./:@%+,-]`, `${NAME}` references (not `$NAME`: dotenvy ends the name at `_`),
/// single quotes without a backslash, double quotes without a backslash or backtick. An entry
/// that dotenvy reads right but is spelled otherwise is rewritten as a literal; one on the first
/// line of a file that starts with a UTF-8 BOM is not seen by bash at all. The same holds for the
/// entries its `${NAME}` references resolve to.
fn every_reader_reads_alike(text: &str, key: &str) -> bool {
    let bom = text.starts_with(BOM);
    let body = text.strip_prefix(BOM).unwrap_or(text);
    let entries: Vec<_> = logical_lines(body)
        .into_iter()
        .filter_map(|l| entry_span(body, &l).map(|e| (l, e)))
        .collect();
    entries
        .iter()
        .rposition(|(_, e)| e.key == key)
        .is_some_and(|i| entry_alike(body, bom, &entries, i, 0))
}

/// `every_reader_reads_alike` for `entries[i]`, and for the definitions its `${NAME}`s resolve
/// to (the last entry for NAME before it; none: both read an empty string).
fn entry_alike(
    body: &str,
    bom: bool,
    entries: &[(dotenv::Logical, dotenv::EntrySpan)],
    i: usize,
    depth: usize,
) -> bool {
    let (l, e) = &entries[i];
    if depth > 16 || (bom && l.start == 0) {
        return false; // behind a BOM, bash reads the line as a command, not an assignment
    }
    if &body[e.key_end..e.value_start] != "=" {
        return false; // `K = v`, `K= v`: dotenvy reads them, bash runs a command
    }
    let tail = &body[e.token_end..l.end];
    if tail.trim_start_matches([' ', '\t']).starts_with('\r') {
        return false;
    }
    let token = &body[e.value_start..e.token_end];
    common_dialect(token)
        && token.split("${").skip(1).all(|after| {
            let name = after.split('}').next().unwrap_or_default();
            entries[..i]
                .iter()
                .rposition(|(_, d)| d.key == name)
                .is_none_or(|j| entry_alike(body, bom, entries, j, depth + 1))
        })
}

fn common_dialect(token: &str) -> bool {
    let mut rest = token;
    while let Some(c) = rest.chars().next() {
        let n = if c == '\'' {
            match rest[1..].find('\'') {
                Some(end) if !rest[1..1 + end].contains('\\') => end + 2,
                _ => return false,
            }
        } else if c == '"' {
            let Some(end) = rest[1..].find('"') else {
                return false;
            };
            let inner = &rest[1..1 + end];
            if inner.contains(['\\', '`']) || !references_ok(inner) {
                return false;
            }
            end + 2
        } else if c == '$' {
            let Some(end) = rest.find('}') else {
                return false;
            };
            if !references_ok(&rest[..=end]) {
                return false;
            }
            end + 1
        } else if c.is_ascii() && is_bare(c as u8) {
            1
        } else {
            return false;
        };
        rest = &rest[n..];
    }
    true
}

/// Every `$` in `s` starts a `${NAME}` with a valid name.
fn references_ok(s: &str) -> bool {
    s.split('$').skip(1).all(|after| {
        after
            .strip_prefix('{')
            .and_then(|a| a.split_once('}'))
            .is_some_and(|(name, _)| is_valid_key(name))
    })
}

/// Rewrite the last entry for `key` in place, or append one (`value` is checked quotable).
fn set_one(text: &str, key: &str, value: &str) -> String {
    let body_off = if text.starts_with(BOM) { BOM.len() } else { 0 };
    let body = &text[body_off..];
    let lines = logical_lines(body);
    // An entry on a BOM's line is invisible to bash (the BOM makes it a command): append after
    // it instead, so the last entry, the one every reader ends up with, is one bash reads.
    let last = lines
        .iter()
        .rev()
        .find_map(|l| entry_span(body, l).filter(|e| e.key == key).map(|e| (l, e)))
        .filter(|(l, _)| body_off == 0 || l.start > 0);
    let mut out = String::with_capacity(text.len() + key.len() + value.len() + 5);
    match last {
        Some((l, e)) => {
            let tail = &body[e.token_end..l.end];
            let tail = match tail.strip_suffix("\r\n") {
                Some(t) => format!("{t}\n"),
                None => tail.to_owned(),
            };
            let commented = !tail.trim().is_empty();
            let quoted = quote_value(value, commented).expect("checked by check_entry");
            out.push_str(&text[..body_off + e.key_end]);
            out.push('=');
            out.push_str(&quoted);
            out.push_str(&tail);
            out.push_str(&body[l.end..]);
        }
        None => {
            let quoted = quote_value(value, false).expect("checked by check_entry");
            out.push_str(text);
            if !body.is_empty() && !body.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(key);
            out.push('=');
            out.push_str(&quoted);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests;
