//! A port of dotenvy 0.15's reader (its `QuotedLines` line joiner and its `LineParser`), for two
//! things dotenvy does not expose: where each entry's bytes are (to edit one in place), and the
//! values read the way the factory reads them, in a *clean* environment: dotenvy itself resolves
//! `${VAR}` from the reading process's environment first, so the tool's own environment would
//! leak into its read-back check. `tests.rs` checks this port against dotenvy itself.

use std::collections::HashMap;
use std::ops::ControlFlow;

/// One dotenvy "line": one or more physical lines (a quoted value may span several).
#[derive(Debug)]
pub(super) struct Logical {
    /// Byte offset of its first byte.
    pub(super) start: usize,
    /// End of the text dotenvy's line parser gets: before the line ending, or at an inline
    /// comment its line joiner cuts off.
    pub(super) parse_end: usize,
    /// Byte offset after its last line ending (or end of file).
    pub(super) end: usize,
    /// 1-based number of its first physical line.
    pub(super) first_line: usize,
    /// Whole line is a comment (dotenvy skips it).
    pub(super) comment: bool,
}

/// Port of dotenvy 0.15's `QuotedLines` line joiner (iter.rs): where one entry ends.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum JoinState {
    Complete,
    Escape,
    StrongOpen,
    StrongOpenEscape,
    WeakOpen,
    WeakOpenEscape,
    Comment,
    WhiteSpace,
}

pub(super) fn eval_end_state(prev: JoinState, seg: &str) -> (usize, JoinState) {
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

pub(super) fn logical_lines(body: &str) -> Vec<Logical> {
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
pub(super) struct EntrySpan {
    pub(super) key: String,
    /// After the key name (after `export KEY`): what precedes is kept.
    pub(super) key_end: usize,
    /// Where the value token starts (`token_end` for an empty value).
    pub(super) value_start: usize,
    /// After the value token: what follows (spaces, `# comment`, line ending) is kept.
    pub(super) token_end: usize,
}

pub(super) fn skip_ws(s: &str, i: usize) -> usize {
    s[i..]
        .find(|c: char| !c.is_whitespace())
        .map_or(s.len(), |n| i + n)
}

pub(super) fn key_len(s: &str) -> usize {
    if !s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        return 0;
    }
    s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(s.len())
}

/// The key of a line, as far as it can be read (for error messages).
pub(super) fn leading_key(line: &str) -> Option<String> {
    let i = skip_ws(line, 0);
    let n = key_len(&line[i..]);
    (n > 0).then(|| line[i..i + n].to_owned())
}

/// Mirror of dotenvy's `LineParser` (parse.rs) up to the value, then of `parse_value` to find
/// where the value token stops. Only called on files dotenvy parsed without error.
pub(super) fn entry_span(body: &str, l: &Logical) -> Option<EntrySpan> {
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
        value_start: l.start + v.min(token_end),
        token_end: l.start + token_end,
    })
}

/// One piece of a value as dotenvy's `parse_value` reads it.
enum Piece {
    /// A character of the value as written (quotes and substitutions already taken apart).
    Char(char),
    /// The character after a backslash, outside single quotes.
    Escaped(char),
    /// A character of a `$NAME` or `${NAME}` substitution's name.
    Name(char),
    /// The substitution's name is complete: substitute it here.
    EndName,
    /// An unquoted, unescaped space or tab outside a substitution: the value token ends here.
    Blank,
}

/// Walks `input` as dotenvy 0.15's `parse_value` does (quotes, backslash escapes, `$NAME` and
/// `${NAME}` substitutions), handing each piece and its byte offset to `f`, which may stop the
/// walk. `Continue(open)` when the input ran out: `open` if a quote or a `${` was left unclosed.
/// The one copy of those rules: the token's extent and the value both come from it.
fn scan_value<B>(
    input: &str,
    mut f: impl FnMut(usize, Piece) -> ControlFlow<B>,
) -> ControlFlow<B, bool> {
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
            f(i, Piece::Escaped(c))?;
        } else if strong {
            if c == '\'' {
                strong = false;
            } else {
                f(i, Piece::Char(c))?;
            }
        } else if sub != Sub::None {
            if c.is_alphanumeric() {
                name_empty = false;
                f(i, Piece::Name(c))?;
            } else if sub == Sub::Block {
                if c == '{' && name_empty {
                    sub = Sub::Escaped;
                } else {
                    // dotenvy ends `$NAME` here and takes `c` literally, even a quote or space.
                    name_empty = true;
                    f(i, Piece::EndName)?;
                    if c != '$' {
                        sub = Sub::None;
                        f(i, Piece::Char(c))?;
                    }
                }
            } else if c == '}' {
                sub = Sub::None;
                name_empty = true;
                f(i, Piece::EndName)?;
            } else {
                name_empty = false;
                f(i, Piece::Name(c))?;
            }
        } else if c == '$' {
            sub = Sub::Block;
            name_empty = true;
        } else if weak {
            if c == '"' {
                weak = false;
            } else if c == '\\' {
                escaped = true;
            } else {
                f(i, Piece::Char(c))?;
            }
        } else if c == '\'' {
            strong = true;
        } else if c == '"' {
            weak = true;
        } else if c == '\\' {
            escaped = true;
        } else if c == ' ' || c == '\t' {
            f(i, Piece::Blank)?;
        } else {
            f(i, Piece::Char(c))?;
        }
    }
    ControlFlow::Continue(sub == Sub::Escaped || strong || weak)
}

/// Length of the value token as dotenvy's `parse_value` consumes it: up to the first unquoted,
/// unescaped space or tab outside a `$` substitution, or the whole input.
pub(super) fn value_token_len(input: &str) -> usize {
    let blank = scan_value(input, |i, p| match p {
        Piece::Blank => ControlFlow::Break(i),
        _ => ControlFlow::Continue(()),
    });
    match blank {
        ControlFlow::Break(i) => i,
        ControlFlow::Continue(_) => input.len(),
    }
}

/// The entries of `body` (BOM already removed) as dotenvy 0.15 reads them, in file order, with
/// `${VAR}`/`$VAR` resolved only from earlier entries of the file (an unknown name is empty), as
/// in a clean environment. None on a parse error; `read_values` has dotenvy itself decide which
/// files are valid (an escape or quote left open at the end of the file is only caught there).
pub(super) fn parse_clean(body: &str) -> Option<Vec<(String, String)>> {
    let mut data: HashMap<String, Option<String>> = HashMap::new();
    let mut out = Vec::new();
    for l in logical_lines(body) {
        if l.comment {
            continue;
        }
        if let Some(kv) = parse_line(&body[l.start..l.parse_end], &mut data)? {
            out.push(kv);
        }
    }
    Some(out)
}

/// dotenvy's `LineParser::parse_line`: Ok(None) for a blank or comment line.
fn parse_line(
    line: &str,
    data: &mut HashMap<String, Option<String>>,
) -> Option<Option<(String, String)>> {
    let mut s = line.trim_end();
    s = s.trim_start();
    if s.is_empty() || s.starts_with('#') {
        return Some(None);
    }
    let key_of = |s: &str| -> Option<(String, usize)> {
        let n = key_len(s);
        (n > 0).then(|| (s[..n].to_owned(), n))
    };
    let (mut key, n) = key_of(s)?;
    s = s[n..].trim_start();
    if key == "export" && !s.starts_with('=') {
        let (k, n) = key_of(s)?;
        key = k;
        s = s[n..].trim_start();
    }
    s = s.strip_prefix('=')?.trim_start();
    if s.is_empty() || s.starts_with('#') {
        data.insert(key.clone(), None);
        return Some(Some((key, String::new())));
    }
    let value = parse_value(s, data)?;
    data.insert(key.clone(), Some(value.clone()));
    Some(Some((key, value)))
}

/// dotenvy's `parse_value`, with substitution from the file's earlier entries only.
fn parse_value(input: &str, data: &HashMap<String, Option<String>>) -> Option<String> {
    let subst = |name: &mut String, out: &mut String| {
        if let Some(Some(v)) = data.get(name.as_str()) {
            out.push_str(v);
        }
        name.clear();
    };
    let mut out = String::new();
    let mut name = String::new();
    let end = scan_value(input, |i, p| {
        match p {
            Piece::Char(c) => out.push(c),
            Piece::Escaped(c) => match c {
                '\\' | '\'' | '"' | '$' | ' ' => out.push(c),
                'n' => out.push('\n'),
                _ => return ControlFlow::Break(false),
            },
            Piece::Name(c) => name.push(c),
            Piece::EndName => subst(&mut name, &mut out),
            // After the token only blanks, then nothing or a comment.
            Piece::Blank => {
                let rest = input[i..].trim_start_matches([' ', '\t']);
                return ControlFlow::Break(rest.is_empty() || rest.starts_with('#'));
            }
        }
        ControlFlow::Continue(())
    });
    if matches!(end, ControlFlow::Break(false) | ControlFlow::Continue(true)) {
        return None;
    }
    subst(&mut name, &mut out);
    Some(out)
}
