//! The marked block in the user's shell rc file that exports `CLAUDE_CONFIG_DIR`.
//!
//! Interactive shells need `CLAUDE_CONFIG_DIR` too, or a `claude` started by hand computes a
//! different lock path than the factory's agents and the refresh-token race comes back. The export
//! lives in one block between fixed marker lines so that reruns replace it instead of stacking
//! copies, and `undo` can find it. Everything outside the block is the user's and is kept byte for
//! byte; paths are bytes throughout (a home path need not be UTF-8).

use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// First line of the managed block.
pub const START_MARKER: &str = "# >>> disinto-claude-init >>>";
/// Last line of the managed block.
pub const END_MARKER: &str = "# <<< disinto-claude-init <<<";
/// Says who owns the block and how to get rid of it, for whoever reads the rc file later.
const MANAGED_COMMENT: &str =
    "# Managed by disinto-claude-init (Claude Code's shared config dir); \
                               removed by `disinto-claude-init undo`.";

/// The shell family whose rc file and syntax to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShellKind {
    /// `~/.bashrc`, POSIX syntax.
    Bash,
    /// `${ZDOTDIR:-~}/.zshrc`, POSIX syntax.
    Zsh,
    /// A conf.d snippet, fish syntax.
    Fish,
    /// Anything else (sh, dash, ksh, unknown): `~/.profile`, POSIX syntax.
    Posix,
}

impl ShellKind {
    /// Classify a login shell (the passwd entry's shell, or `$SHELL`) by its file name: `bash`,
    /// `zsh`, `fish`; anything else is treated as a POSIX shell. A leading `-` (the login-shell
    /// convention for argv\[0\]) is ignored.
    pub fn from_login_shell(shell: &Path) -> ShellKind {
        let name = shell.file_name().map_or(&b""[..], |n| n.as_bytes());
        let name = name.strip_prefix(b"-").unwrap_or(name);
        match name {
            b"bash" => ShellKind::Bash,
            b"zsh" => ShellKind::Zsh,
            b"fish" => ShellKind::Fish,
            _ => ShellKind::Posix,
        }
    }
}

/// The rc file for that shell: bash `<home>/.bashrc`, zsh `<zdotdir or home>/.zshrc`, fish
/// `<home>/.config/fish/conf.d/disinto-claude.fish` (a file of our own, so fish's main config is
/// never touched), else `<home>/.profile`.
///
/// An empty `zdotdir` counts as unset, as in zsh's own `${ZDOTDIR:-$HOME}`.
pub fn default_profile(kind: ShellKind, home: &Path, zdotdir: Option<&Path>) -> PathBuf {
    match kind {
        ShellKind::Bash => home.join(".bashrc"),
        ShellKind::Zsh => zdotdir
            .filter(|z| !z.as_os_str().is_empty())
            .unwrap_or(home)
            .join(".zshrc"),
        ShellKind::Fish => home.join(".config/fish/conf.d/disinto-claude.fish"),
        ShellKind::Posix => home.join(".profile"),
    }
}

/// The whole marked block, ending with a newline.
///
/// POSIX shells get `export CLAUDE_CONFIG_DIR='...'`: inside single quotes nothing is special, so
/// only `'` needs the `'\''` dance. Fish gets `set -gx CLAUDE_CONFIG_DIR '...'`, where single
/// quotes still interpret `\\` and `\'`, so both are backslash-escaped. The path is written as
/// raw bytes, non-UTF-8 included (bash and dash keep them as they are).
pub fn render_block(kind: ShellKind, config_dir: &Path) -> Vec<u8> {
    let path = config_dir.as_os_str().as_bytes();
    let mut out = Vec::with_capacity(path.len() + 200);
    out.extend_from_slice(START_MARKER.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(MANAGED_COMMENT.as_bytes());
    out.push(b'\n');
    match kind {
        ShellKind::Fish => {
            out.extend_from_slice(b"set -gx CLAUDE_CONFIG_DIR '");
            for &b in path {
                if b == b'\\' || b == b'\'' {
                    out.push(b'\\');
                }
                out.push(b);
            }
            out.push(b'\'');
        }
        ShellKind::Bash | ShellKind::Zsh | ShellKind::Posix => {
            out.extend_from_slice(b"export CLAUDE_CONFIG_DIR='");
            for &b in path {
                if b == b'\'' {
                    out.extend_from_slice(b"'\\''");
                } else {
                    out.push(b);
                }
            }
            out.push(b'\'');
        }
    }
    out.push(b'\n');
    out.extend_from_slice(END_MARKER.as_bytes());
    out.push(b'\n');
    out
}

/// Byte ranges of the complete marked blocks, each from the start of its start-marker line to
/// the end of its end-marker line (line ending included).
///
/// Marker lines match with surrounding whitespace (a CR of a CRLF file included) ignored. Each end
/// marker pairs with the nearest start marker before it; a start marker whose end marker the
/// user deleted is left alone rather than taken to run up to some later block or the end of the
/// file, which would swallow the user's own lines in between.
fn find_blocks(bytes: &[u8]) -> Vec<Range<usize>> {
    let mut blocks = Vec::new();
    let mut open: Option<usize> = None;
    let mut pos = 0;
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        let trimmed = line.trim_ascii();
        if trimmed == START_MARKER.as_bytes() {
            open = Some(pos);
        } else if trimmed == END_MARKER.as_bytes() {
            if let Some(start) = open.take() {
                blocks.push(start..pos + line.len());
            }
        }
        pos += line.len();
    }
    blocks
}

/// New file bytes with the block in place, or None when the file already holds exactly this
/// block, once.
///
/// An existing block is replaced where it stands (the user may have moved it above something that
/// depends on it); if there are several, the first one's position gets the block and the others
/// are removed, so the file never ends up with two. Without a block, it is appended, after a line
/// ending if the file lacks a final one and a blank separator line if the file does not already
/// end with one.
pub fn apply_block(original: &[u8], block: &[u8]) -> Option<Vec<u8>> {
    let blocks = find_blocks(original);
    let mut out = Vec::with_capacity(original.len() + block.len() + 2);
    if blocks.is_empty() {
        out.extend_from_slice(original);
        if !out.is_empty() {
            if !out.ends_with(b"\n") {
                out.push(b'\n');
            }
            if !ends_with_blank_line(&out) {
                out.push(b'\n');
            }
        }
        out.extend_from_slice(block);
    } else {
        let mut kept_to = 0;
        for (i, r) in blocks.iter().enumerate() {
            out.extend_from_slice(&original[kept_to..r.start]);
            if i == 0 {
                out.extend_from_slice(block);
            }
            kept_to = r.end;
        }
        out.extend_from_slice(&original[kept_to..]);
    }
    (out != original).then_some(out)
}

/// `bytes` ends with a newline and the line before it is empty (or there is none).
fn ends_with_blank_line(bytes: &[u8]) -> bool {
    let Some(rest) = bytes.strip_suffix(b"\n") else {
        return false;
    };
    let rest = rest.strip_suffix(b"\r").unwrap_or(rest);
    rest.is_empty() || rest.ends_with(b"\n")
}

/// The file without the block (every complete block, in fact); None if there is none.
///
/// For undo diagnostics: when a block sits at the end of the file after a blank line, that blank
/// line (the separator `apply_block` adds) goes too, so appending and removing gives back the
/// original bytes for files that ended with a single newline.
pub fn remove_block(original: &[u8]) -> Option<Vec<u8>> {
    let blocks = find_blocks(original);
    if blocks.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(original.len());
    let mut kept_to = 0;
    for r in &blocks {
        out.extend_from_slice(&original[kept_to..r.start]);
        if r.end == original.len() && out.ends_with(b"\n\n") {
            out.pop();
        }
        kept_to = r.end;
    }
    out.extend_from_slice(&original[kept_to..]);
    Some(out)
}

/// A line after the managed block that sets, exports or unsets `CLAUDE_CONFIG_DIR`: a shell
/// reading the rc file runs it after the block, so it wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaterOverride {
    /// 1-based line number in the rc file.
    pub line: usize,
    /// The line's bytes, without its line ending and surrounding whitespace.
    pub text: Vec<u8>,
}

/// Lines after the first complete managed block of `rc` that override its export: the user's own
/// `export CLAUDE_CONFIG_DIR=...`, or the leftover of an old block whose start marker was deleted.
///
/// Pass the file as it is (for `verify`) or as `apply_block` will leave it (for the plan): with no
/// complete block there is nothing to override and the result is empty. The file is read, never
/// executed: each line (comments cut off, split into commands at `;`, `&`, `|`, `(`, `)`, `{`,
/// `}`) counts when one of its commands is a bare assignment `CLAUDE_CONFIG_DIR=...` (not one
/// prefixed to another command, which is temporary), or `export`/`declare`/`typeset`/`local`/
/// `readonly`/`unset`/`set`/`setenv`/`unsetenv` naming `CLAUDE_CONFIG_DIR`. What a sourced file
/// or a function does is not seen; a line inside a here-document may be named needlessly.
pub fn later_overrides(rc: &[u8]) -> Vec<LaterOverride> {
    let Some(block) = find_blocks(rc).into_iter().next() else {
        return Vec::new();
    };
    let first_line = 1 + rc[..block.end].iter().filter(|&&b| b == b'\n').count();
    let mut out = Vec::new();
    let mut pos = block.end;
    for (i, line) in rc[block.end..].split_inclusive(|&b| b == b'\n').enumerate() {
        let start = pos;
        pos += line.len();
        if find_blocks(&rc[start..])
            .first()
            .is_some_and(|b| b.start == 0)
        {
            continue; // the start of another of our blocks: apply_block removes those
        }
        if sets_config_dir(line) {
            out.push(LaterOverride {
                line: first_line + i,
                text: line.trim_ascii().to_vec(),
            });
        }
    }
    out
}

/// Whether one rc line sets, exports or unsets `CLAUDE_CONFIG_DIR` (see `later_overrides`).
fn sets_config_dir(line: &[u8]) -> bool {
    const NAME: &[u8] = b"CLAUDE_CONFIG_DIR";
    const KEYWORDS: &[&[u8]] = &[
        b"then", b"do", b"else", b"elif", b"if", b"while", b"until", b"!", b"builtin", b"command",
    ];
    const SETTERS: &[&[u8]] = &[
        b"export",
        b"declare",
        b"typeset",
        b"local",
        b"readonly",
        b"unset",
        b"set",
        b"setenv",
        b"unsetenv",
    ];
    // Cut an unquoted `#` comment (one that starts a word).
    let (mut quote, mut prev_space) = (None, true);
    let mut end = line.len();
    for (i, &b) in line.iter().enumerate() {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'\'' || b == b'"' => quote = Some(b),
            None if b == b'#' && prev_space => {
                end = i;
                break;
            }
            None => {}
        }
        prev_space = b.is_ascii_whitespace() || b";&|(){}".contains(&b);
    }
    let strip = |w: &[u8]| -> Vec<u8> {
        w.iter()
            .copied()
            .filter(|&b| b != b'"' && b != b'\'')
            .collect()
    };
    let name_of = |w: &[u8]| -> Vec<u8> {
        let w = strip(w);
        w.split(|&b| b == b'=').next().unwrap_or_default().to_vec()
    };
    for cmd in line[..end].split(|&b| b";&|(){}".contains(&b)) {
        let words: Vec<&[u8]> = cmd
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
            .collect();
        let mut i = 0;
        while i < words.len() && KEYWORDS.contains(&words[i]) {
            i += 1;
        }
        let mut assigns = false;
        while i < words.len() && words[i].contains(&b'=') && !words[i].starts_with(b"=") {
            assigns |= name_of(words[i]) == NAME;
            i += 1;
        }
        if i == words.len() {
            if assigns {
                return true;
            }
            continue;
        }
        if SETTERS.contains(&words[i])
            && words[i + 1..]
                .iter()
                .any(|w| !w.starts_with(b"-") && name_of(w) == NAME)
        {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::io::Write;
    use std::process::Command;

    fn p(bytes: &[u8]) -> &Path {
        Path::new(OsStr::from_bytes(bytes))
    }

    fn block(path: &str) -> Vec<u8> {
        render_block(ShellKind::Bash, Path::new(path))
    }

    fn count_blocks(bytes: &[u8]) -> usize {
        let s = START_MARKER.as_bytes();
        bytes.windows(s.len()).filter(|w| *w == s).count()
    }

    #[test]
    fn shell_kind_by_file_name() {
        for (shell, kind) in [
            ("/bin/bash", ShellKind::Bash),
            ("/usr/local/bin/bash", ShellKind::Bash),
            ("-bash", ShellKind::Bash),
            ("/usr/bin/zsh", ShellKind::Zsh),
            ("/opt/homebrew/bin/fish", ShellKind::Fish),
            ("/bin/sh", ShellKind::Posix),
            ("/bin/dash", ShellKind::Posix),
            ("/usr/bin/ksh", ShellKind::Posix),
            ("/usr/sbin/nologin", ShellKind::Posix),
            ("/bin/bash5", ShellKind::Posix),
            ("", ShellKind::Posix),
            ("/", ShellKind::Posix),
        ] {
            assert_eq!(
                ShellKind::from_login_shell(Path::new(shell)),
                kind,
                "{shell}"
            );
        }
        assert_eq!(
            ShellKind::from_login_shell(p(b"/bin/\xffsh")),
            ShellKind::Posix
        );
    }

    #[test]
    fn default_profile_paths() {
        let home = Path::new("/home/u");
        for (kind, zdotdir, want) in [
            (ShellKind::Bash, None, "/home/u/.bashrc"),
            (ShellKind::Zsh, None, "/home/u/.zshrc"),
            (
                ShellKind::Zsh,
                Some("/home/u/.config/zsh"),
                "/home/u/.config/zsh/.zshrc",
            ),
            (ShellKind::Zsh, Some(""), "/home/u/.zshrc"),
            (
                ShellKind::Fish,
                None,
                "/home/u/.config/fish/conf.d/disinto-claude.fish",
            ),
            (ShellKind::Posix, None, "/home/u/.profile"),
        ] {
            assert_eq!(
                default_profile(kind, home, zdotdir.map(Path::new)),
                Path::new(want),
                "{kind:?} {zdotdir:?}"
            );
        }
        assert_eq!(
            default_profile(ShellKind::Bash, p(b"/home/\xff"), None)
                .as_os_str()
                .as_bytes(),
            b"/home/\xff/.bashrc"
        );
    }

    #[test]
    fn render_block_exact_bytes() {
        let expected = format!(
            "{START_MARKER}\n{MANAGED_COMMENT}\nexport CLAUDE_CONFIG_DIR='/var/lib/x/config'\n\
             {END_MARKER}\n"
        );
        for kind in [ShellKind::Bash, ShellKind::Zsh, ShellKind::Posix] {
            assert_eq!(
                render_block(kind, Path::new("/var/lib/x/config")),
                expected.as_bytes()
            );
        }
        assert!(MANAGED_COMMENT.contains("disinto-claude-init undo"));
        let posix = render_block(ShellKind::Posix, p(b"/a'b\\c$d \xff"));
        let line = posix.split(|&b| b == b'\n').nth(2).unwrap();
        assert_eq!(line, b"export CLAUDE_CONFIG_DIR='/a'\\''b\\c$d \xff'");
        let fish = render_block(ShellKind::Fish, p(b"/a'b\\c$d \xff"));
        assert_eq!(
            fish,
            [
                START_MARKER.as_bytes(),
                b"\n",
                MANAGED_COMMENT.as_bytes(),
                b"\nset -gx CLAUDE_CONFIG_DIR '/a\\'b\\\\c$d \xff'\n",
                END_MARKER.as_bytes(),
                b"\n"
            ]
            .concat()
        );
    }

    #[test]
    fn insert_into_empty_file() {
        let b = block("/c");
        assert_eq!(apply_block(b"", &b).unwrap(), b);
    }

    #[test]
    fn insert_into_non_empty_file_with_blank_separator() {
        let b = block("/c");
        let got = apply_block(b"alias ll='ls -l'\n", &b).unwrap();
        assert_eq!(got, [&b"alias ll='ls -l'\n\n"[..], &b].concat());
        // Already ends with a blank line: no second one.
        let got = apply_block(b"x=1\n\n", &b).unwrap();
        assert_eq!(got, [&b"x=1\n\n"[..], &b].concat());
        let got = apply_block(b"\n", &b).unwrap();
        assert_eq!(got, [&b"\n"[..], &b].concat());
    }

    #[test]
    fn insert_into_file_without_final_newline() {
        let b = block("/c");
        let got = apply_block(b"x=1", &b).unwrap();
        assert_eq!(got, [&b"x=1\n\n"[..], &b].concat());
    }

    #[test]
    fn stale_block_replaced_in_place_surroundings_identical() {
        let old = block("/old/config");
        let new = block("/new/config");
        let before = b"# top\r\nexport A=1  \n\n";
        let after = b"\nsource ~/.aliases\n# end";
        let original = [&before[..], &old, &after[..]].concat();
        let got = apply_block(&original, &new).unwrap();
        assert_eq!(got, [&before[..], &new, &after[..]].concat());
    }

    #[test]
    fn hand_edited_block_is_replaced_whole() {
        let new = block("/new");
        let original = format!(
            "a\n  {START_MARKER}  \r\nexport CLAUDE_CONFIG_DIR=/mine\necho hi\n{END_MARKER}\r\nb\n"
        );
        let got = apply_block(original.as_bytes(), &new).unwrap();
        assert_eq!(got, [&b"a\n"[..], &new, &b"b\n"[..]].concat());
    }

    #[test]
    fn several_blocks_collapse_into_the_first_position() {
        let new = block("/new");
        let original = [
            &b"one\n"[..],
            &block("/a"),
            b"two\n",
            &block("/b"),
            b"three\n",
            &new,
            b"four\n",
        ]
        .concat();
        let got = apply_block(&original, &new).unwrap();
        assert_eq!(
            got,
            [&b"one\n"[..], &new, b"two\n", b"three\n", b"four\n"].concat()
        );
        assert_eq!(count_blocks(&got), 1);
        // Two identical copies are not "exactly once": collapse them.
        let twice = [&new[..], &new].concat();
        assert_eq!(apply_block(&twice, &new).unwrap(), new);
    }

    #[test]
    fn orphan_start_marker_does_not_swallow_user_lines() {
        let new = block("/new");
        let original = format!("{START_MARKER}\nmine=1\nmine=2\n");
        let got = apply_block(original.as_bytes(), &new).unwrap();
        assert_eq!(got, [original.as_bytes(), b"\n", &new].concat());
        // The rerun pairs the end marker with the nearest start: the user lines stay.
        assert_eq!(apply_block(&got, &new), None);
        let newer = block("/newer");
        let again = apply_block(&got, &newer).unwrap();
        assert_eq!(again, [original.as_bytes(), b"\n", &newer].concat());
        // A lone end marker is not a block either.
        let lone = format!("x\n{END_MARKER}\n");
        assert_eq!(remove_block(lone.as_bytes()), None);
    }

    #[test]
    fn idempotent_and_never_two_blocks() {
        let b = block("/c");
        for original in [
            &b""[..],
            b"x",
            b"x\n",
            b"x\r\n",
            b"\n\n",
            &[&b"a\n"[..], &block("/old"), b"z"].concat(),
            &[&block("/a")[..], &block("/b")].concat(),
        ] {
            let once = apply_block(original, &b).unwrap_or_else(|| original.to_vec());
            assert_eq!(
                count_blocks(&once),
                1,
                "{:?}",
                String::from_utf8_lossy(original)
            );
            assert_eq!(apply_block(&once, &b), None);
        }
    }

    #[test]
    fn end_marker_at_eof_without_newline_gets_one() {
        let b = block("/c");
        let original = &b[..b.len() - 1];
        assert_eq!(apply_block(original, &b).unwrap(), b);
    }

    #[test]
    fn remove_block_inverts_append() {
        let b = block("/c");
        for original in [&b""[..], b"x\n", b"a\nb\n"] {
            let applied = apply_block(original, &b).unwrap();
            assert_eq!(remove_block(&applied).unwrap(), original);
        }
        // Documented limits (undo restores from its journal, not from this): a file that already
        // ended with a blank line loses it, one without a final newline keeps the added one.
        assert_eq!(
            remove_block(&apply_block(b"x\n\n", &b).unwrap()).unwrap(),
            b"x\n"
        );
        assert_eq!(
            remove_block(&apply_block(b"x", &b).unwrap()).unwrap(),
            b"x\n"
        );
        assert_eq!(remove_block(b"x\n"), None);
        // In the middle: removed exactly, nothing else.
        let mid = [&b"a\n"[..], &b, b"\nz\n"].concat();
        assert_eq!(remove_block(&mid).unwrap(), b"a\n\nz\n");
    }

    /// Source `rc` with `shell` in a clean environment and return `$CLAUDE_CONFIG_DIR`'s bytes.
    fn shell_reads(shell: &str, rc: &[u8]) -> Vec<u8> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(rc).unwrap();
        f.flush().unwrap();
        let script = if shell == "fish" {
            "source $argv[1]; printf %s \"$CLAUDE_CONFIG_DIR\""
        } else {
            ". \"$1\"; printf %s \"$CLAUDE_CONFIG_DIR\""
        };
        let mut cmd = Command::new(shell);
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", f.path().parent().unwrap());
        if shell == "fish" {
            cmd.arg("--no-config");
        }
        let out = cmd
            .arg("-c")
            .arg(script)
            .args(if shell == "fish" { vec![] } else { vec![shell] })
            .arg(f.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {shell}: {e}"));
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{shell}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    const NASTY_PATHS: &[&[u8]] = &[
        b"/var/lib/disinto/claude-shared/config",
        b"/srv/with space/config",
        b"/srv/it's/config",
        b"/srv/$HOME/${X}/$(id)/`id`/config",
        b"/srv/back\\slash\\",
        b"/srv/\"dq\"/config",
        b"/srv/non-utf8-\xff\xfe/config",
        b"/srv/new\nline",
        b"/srv/'",
    ];

    fn check_posix_shell(shell: &str) {
        for path in NASTY_PATHS {
            let rc = apply_block(b"FOO=bar\n", &render_block(ShellKind::Bash, p(path))).unwrap();
            assert_eq!(
                shell_reads(shell, &rc),
                *path,
                "{shell} on {:?}",
                String::from_utf8_lossy(path)
            );
        }
    }

    #[test]
    fn real_bash_reads_the_exact_path() {
        check_posix_shell("bash");
    }

    #[test]
    fn real_dash_reads_the_exact_path() {
        check_posix_shell("sh");
        if Path::new("/usr/bin/dash").exists() || Path::new("/bin/dash").exists() {
            check_posix_shell("dash");
        }
    }

    #[test]
    fn real_fish_reads_the_exact_path_if_installed() {
        let installed = Command::new("fish").arg("--version").output().is_ok();
        if !installed {
            eprintln!("skip: fish is not installed; the fish quoting is covered by exact bytes");
            return;
        }
        for path in NASTY_PATHS {
            let rc = render_block(ShellKind::Fish, p(path));
            assert_eq!(
                shell_reads("fish", &rc),
                *path,
                "{:?}",
                String::from_utf8_lossy(path)
            );
        }
    }

    #[test]
    fn later_overrides_are_found_with_their_line() {
        let b = block("/s/config");
        let rc = [
            &b"export CLAUDE_CONFIG_DIR=/before\n"[..],
            &b,
            b"alias ll='ls -l'\n",
            b"export CLAUDE_CONFIG_DIR=$HOME/.claude\n",
            b"# export CLAUDE_CONFIG_DIR=/commented\n",
            b"echo $CLAUDE_CONFIG_DIR ${CLAUDE_CONFIG_DIR}\n",
            b"CLAUDE_CONFIG_DIR=/tmp/x claude --version\n",
            b"  CLAUDE_CONFIG_DIR=/bare; export CLAUDE_CONFIG_DIR\n",
            b"if true; then declare -x CLAUDE_CONFIG_DIR=\"/d\"; fi\n",
            b"unset CLAUDE_CONFIG_DIR\n",
            b"[ -n \"$X\" ] && typeset -gx 'CLAUDE_CONFIG_DIR=/t'\n",
            b"export CLAUDE_CONFIG_DIRX=/other OTHER=CLAUDE_CONFIG_DIR\n",
            b"echo hi # export CLAUDE_CONFIG_DIR=/c\n",
        ]
        .concat();
        let found: Vec<usize> = later_overrides(&rc).iter().map(|o| o.line).collect();
        // Line 1 is before the block (overridden by it); the block is lines 2-5.
        assert_eq!(found, vec![7, 11, 12, 13, 14]);
        assert_eq!(
            later_overrides(&rc)[0].text,
            b"export CLAUDE_CONFIG_DIR=$HOME/.claude"
        );
        // No block: nothing to override. Nothing after it: nothing either.
        assert!(later_overrides(b"export CLAUDE_CONFIG_DIR=/x\n").is_empty());
        assert!(later_overrides(&[&b"export CLAUDE_CONFIG_DIR=/x\n"[..], &b].concat()).is_empty());
    }

    #[test]
    fn leftover_of_a_block_whose_start_marker_was_deleted_is_found() {
        let b = block("/new/config");
        let old = block("/old/config");
        // The old block lost its first line: its export and end marker are the user's now.
        let orphan = &old[old.iter().position(|&c| c == b'\n').unwrap() + 1..];
        let rc = apply_block(&[&b"x=1\n"[..], &b, orphan].concat(), &b);
        let rc = rc.unwrap_or_else(|| [&b"x=1\n"[..], &b, orphan].concat());
        let found = later_overrides(&rc);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].line, 7);
        assert_eq!(found[0].text, b"export CLAUDE_CONFIG_DIR='/old/config'");
        // And that is what bash ends up with: the override is real.
        assert_eq!(shell_reads("bash", &rc), b"/old/config");
    }
}
