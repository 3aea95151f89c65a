//! The Debian package (issue 14): `scripts/package-deb.sh` builds it (a release build, so this
//! is slow the first time; the script reuses a package built from the same inputs, so the second
//! caller, here or in tests/integration_ansible.rs, waits for nothing), and these tests install it
//! for real with dpkg into throwaway roots and use what it installed: the binary, the man page
//! with `man -l`, the completions through bash-completion's, zsh's and fish's own loaders.
//!
//! Nothing here is skipped: a missing tool (dpkg, man, bash-completion, zsh, fish) or a package
//! that cannot be built is a failure that says what to install.

mod common;

#[path = "../examples/gen-man.rs"]
mod gen_man;

use common::*;
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

const NAME: &str = "disinto-claude-init";
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The command's stdout; panics (with the command's stderr) unless it exits 0.
#[track_caller]
fn output(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fail (not skip) when a tool the test needs is missing, naming the Debian package.
#[track_caller]
fn need(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is not installed; this test needs it. Install it: apt-get install -y {package}"
    );
}

/// The package, built once per test process by the script (which reuses an up-to-date build).
fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        for (tool, package) in [
            ("dpkg", "dpkg"),
            ("dpkg-deb", "dpkg"),
            ("dpkg-shlibdeps", "dpkg-dev"),
        ] {
            need(tool, package);
        }
        package_deb().to_path_buf()
    })
}

/// The package's control fields (`dpkg-deb --field`), folded lines joined.
fn control() -> Vec<(String, String)> {
    let text = output(Command::new("dpkg-deb").arg("--field").arg(deb()));
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.starts_with(' ') {
            let last = fields
                .last_mut()
                .expect("a continuation line after a field");
            last.1.push('\n');
            last.1.push_str(line.trim_start());
        } else if let Some((k, v)) = line.split_once(':') {
            fields.push((k.to_string(), v.trim().to_string()));
        }
    }
    fields
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name}: field in the package's control file: {fields:?}"))
}

/// A throwaway root the package is installed into with `dpkg --root`, with its own (empty) dpkg
/// database: dpkg unpacks, records and (on removal) deletes exactly as on a real system.
struct Root {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Root {
    fn new() -> Root {
        let (dir, path) = tempdir_in("/tmp", "dci-deb-root.").expect("tempdir in /tmp");
        for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates"] {
            std::fs::create_dir_all(path.join(d)).unwrap();
        }
        std::fs::write(path.join("var/lib/dpkg/status"), b"").unwrap();
        Root { _dir: dir, path }
    }

    fn dpkg(&self) -> Command {
        let mut c = Command::new("dpkg");
        // The root has no libc6 package in its database: the one dependency is the host's.
        c.arg(format!("--root={}", self.path.display()))
            .arg("--force-depends");
        c
    }

    /// A root with the package installed (`dpkg --root=R -i`).
    fn installed() -> Root {
        let root = Root::new();
        output(root.dpkg().arg("--install").arg(deb()));
        root
    }

    fn join(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    /// Every regular file and symlink under usr/, relative to the root.
    fn files(&self) -> BTreeSet<String> {
        manifest(&self.join("usr"))
            .into_iter()
            .filter(|(_, n)| n.kind != Kind::Dir)
            .map(|(k, _)| format!("usr/{}", String::from_utf8_lossy(&k)))
            .collect()
    }
}

/// What the package installs, file by file.
const FILES: &[&str] = &[
    "usr/bin/disinto-claude-init",
    "usr/share/man/man1/disinto-claude-init.1.gz",
    "usr/share/bash-completion/completions/disinto-claude-init",
    "usr/share/zsh/vendor-completions/_disinto-claude-init",
    "usr/share/fish/vendor_completions.d/disinto-claude-init.fish",
    "usr/share/doc/disinto-claude-init/README.md",
    "usr/share/doc/disinto-claude-init/copyright",
    "usr/share/doc/disinto-claude-init/changelog.gz",
];

#[test]
fn control_file_names_the_package_its_version_and_libc_only() {
    let f = control();
    assert_eq!(field(&f, "Package"), NAME);
    assert_eq!(
        field(&f, "Version"),
        format!("{VERSION}-1"),
        "the version comes from Cargo.toml"
    );
    let arch = output(Command::new("dpkg").arg("--print-architecture"));
    assert_eq!(field(&f, "Architecture"), arch.trim());
    // cargo-deb folds Cargo.toml's description at 79 columns.
    assert!(
        field(&f, "Description")
            .replace('\n', " ")
            .starts_with(env!("CARGO_PKG_DESCRIPTION")),
        "the description is Cargo.toml's: {f:?}"
    );
    assert!(
        field(&f, "Description").contains("\nMoves Claude Code's configuration"),
        "an extended description: {f:?}"
    );
    assert!(!field(&f, "Maintainer").is_empty());
    // dpkg-shlibdeps computed the dependencies from the binary's NEEDED libraries: the C library
    // and nothing else (libm and the loader are part of libc6), with a minimum version.
    let depends = field(&f, "Depends");
    let deps: Vec<&str> = depends.split(',').map(str::trim).collect();
    assert_eq!(deps.len(), 1, "only libc: Depends: {depends}");
    let (name, version) = deps[0]
        .split_once(" (>= ")
        .unwrap_or_else(|| panic!("no computed minimum version: Depends: {depends}"));
    assert_eq!(name, "libc6", "Depends: {depends}");
    assert!(
        version.ends_with(')') && version.starts_with("2."),
        "a glibc version: Depends: {depends}"
    );
}

#[test]
fn dpkg_installs_the_files_runs_the_binary_and_removes_everything() {
    let root = Root::installed();
    let status = output(root.dpkg().args(["--status", NAME]));
    assert!(
        status.contains("Status: install ok installed")
            && status.contains(&format!("Version: {VERSION}-1")),
        "dpkg --status: {status}"
    );
    // Exactly these files, plus the docs under the doc dir, all root's, none writable by others.
    let files = root.files();
    for f in FILES {
        assert!(
            files.contains(*f),
            "the package does not install {f}: {files:#?}"
        );
    }
    for f in &files {
        assert!(
            FILES.contains(&f.as_str()) || f.starts_with("usr/share/doc/disinto-claude-init/docs/"),
            "unexpected file in the package: {f}"
        );
        let m = std::fs::symlink_metadata(root.join(f)).unwrap();
        assert_eq!((m.uid(), m.gid()), (0, 0), "{f} is not owned by root");
        assert_eq!(m.mode() & 0o022, 0, "{f} is writable by group or others");
    }
    for doc in [
        "README.md",
        "layouts.md",
        "exit-codes.md",
        "recovery.md",
        "json.md",
    ] {
        let d = if doc == "README.md" {
            doc.to_string()
        } else {
            format!("docs/{doc}")
        };
        assert!(
            files.contains(&format!("usr/share/doc/disinto-claude-init/{d}")),
            "no {d} in the docs: {files:#?}"
        );
    }
    assert_eq!(
        std::fs::read(root.join("usr/share/doc/disinto-claude-init/README.md")).unwrap(),
        std::fs::read(repo().join("README.md")).unwrap(),
        "the packaged README is the checkout's"
    );
    let copyright =
        std::fs::read_to_string(root.join("usr/share/doc/disinto-claude-init/copyright")).unwrap();
    assert!(
        copyright.contains("Upstream-Name: disinto-claude-init")
            && copyright.contains(&format!("License: {}", env!("CARGO_PKG_LICENSE"))),
        "copyright: {copyright}"
    );

    // The binary: the crate's version, mode 0755, stripped (no symbol table).
    let bin = root.join("usr/bin/disinto-claude-init");
    assert_eq!(mode_of(&bin), 0o755);
    let v = output(Command::new(&bin).arg("--version"));
    assert_eq!(v.trim(), format!("{NAME} {VERSION}"));
    let elf = std::fs::read(&bin).unwrap();
    assert!(
        !elf.windows(8).any(|w| w == b".symtab\0"),
        "the packaged binary still has a symbol table: not stripped"
    );

    // dpkg -r takes back every file it installed.
    output(root.dpkg().args(["--remove", NAME]));
    let left = root.files();
    assert!(left.is_empty(), "dpkg --remove left files: {left:#?}");
}

#[test]
fn the_packaged_binary_migrates_and_undoes_a_home() {
    let root = Root::installed();
    let bin = root.join("usr/bin/disinto-claude-init");
    let w = World::realistic();
    let cmd = |args: &[&str]| {
        let mut c = Command::new(&bin);
        c.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &w.home)
            .env("LANG", "C.UTF-8")
            .args(args)
            .args(w.path_args())
            .stdin(Stdio::null());
        c
    };
    let before = w.manifest();
    let claude_before = manifest(&w.claude());
    let (code, doc) = run_json(&mut cmd(&["--yes", "--json"]));
    assert_eq!((code, &doc["changed"]), (0, &true.into()), "{doc:#}");
    let (code, doc) = run_json(&mut cmd(&["status", "--json"]));
    assert_eq!(
        (code, doc["layout"].as_str()),
        (0, Some("migrated")),
        "{doc:#}"
    );
    assert_config_holds(&claude_before, &w.config, "installed binary");
    let r = run(&mut cmd(&["verify"]));
    assert_eq!(r.code, 0, "verify: {}\n{}", r.stdout, r.stderr);
    let (code, doc) = run_json(&mut cmd(&["undo", "--yes", "--json"]));
    assert_eq!(code, 0, "undo: {doc:#}");
    assert_same(
        &before,
        &w.manifest(),
        "migrate then undo with the packaged binary",
    );
}

#[test]
fn man_l_opens_the_packaged_man_page() {
    need("man", "man-db");
    need("gzip", "gzip");
    let root = Root::installed();
    let page = root.join("usr/share/man/man1/disinto-claude-init.1.gz");
    // Gzipped as Debian does, and byte for byte what examples/gen-man.rs makes from the clap
    // definitions (the same page as docs/disinto-claude-init.1).
    let roff = Command::new("gzip")
        .arg("-dc")
        .arg(&page)
        .output()
        .expect("gzip -dc");
    assert!(
        roff.status.success(),
        "gzip -dc {}: not gzip",
        page.display()
    );
    assert!(
        roff.stdout == gen_man::man_page(),
        "the packaged man page is not what examples/gen-man.rs generates"
    );
    let text = output(
        Command::new("man")
            .arg("-l")
            .arg(&page)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .env("MANPAGER", "cat")
            .env("PAGER", "cat")
            .env("MANWIDTH", "100")
            .env("TERM", "dumb"),
    );
    for want in [
        "disinto-claude-init - ",
        "SYNOPSIS",
        "--dry-run",
        "EXIT STATUS",
        "ENVIRONMENT",
        "CLAUDE_CONFIG_DIR",
        VERSION,
    ] {
        assert!(text.contains(want), "man -l: no {want:?} in:\n{text}");
    }
}

/// A bash that loads bash-completion the way an interactive shell does, with the package's
/// root as the first data dir, then runs `body`.
fn bash_completion(root: &Root, body: &str) -> String {
    let loader = "/usr/share/bash-completion/bash_completion";
    assert!(
        Path::new(loader).is_file(),
        "bash-completion is not installed ({loader}); this test needs it. Install it: apt-get install -y bash-completion"
    );
    let empty = tempfile::tempdir().unwrap();
    output(
        Command::new("bash")
            .args(["--norc", "--noprofile", "-c"])
            .arg(format!(
                "source {loader} || exit 90\n\
                 # what bash does on the first <TAB> after a command it has no completion for:\n\
                 # call the default (-D) completion, bash-completion's loader, with the command\n\
                 loader=$(complete -p -D | sed -E 's/.* -F ([^ ]+) .*/\\1/')\n\
                 [ -n \"$loader\" ] || exit 91\n\
                 \"$loader\" disinto-claude-init '' ''\n\
                 [ $? = 124 ] || exit 92\n\
                 fn=$(complete -p disinto-claude-init | sed -E 's/.* -F ([^ ]+) .*/\\1/')\n\
                 [ -n \"$fn\" ] || exit 93\n\
                 comp() {{ COMP_WORDS=(\"$@\"); COMP_CWORD=$(( $# - 1 )); COMP_LINE=\"$*\"; \
                 COMP_POINT=${{#COMP_LINE}}; COMPREPLY=(); \
                 \"$fn\" disinto-claude-init \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
                 printf '%s\\n' \"${{COMPREPLY[@]}}\"; }}\n{body}"
            ))
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", empty.path())
            .env("XDG_DATA_DIRS", root.join("usr/share"))
            .env("BASH_COMPLETION_USER_DIR", empty.path()),
    )
}

#[test]
fn bash_completion_loads_the_packaged_script_and_completes_a_subcommand() {
    let root = Root::installed();
    // The loader found the packaged file (not some other copy): extdebug names the function's file.
    let from = bash_completion(&root, "shopt -s extdebug; declare -F \"$fn\"");
    assert!(
        from.trim_end().ends_with(&format!(
            " {}",
            root.join("usr/share/bash-completion/completions/disinto-claude-init")
                .display()
        )),
        "the completion function does not come from the package: {from}"
    );
    let out = bash_completion(&root, "comp disinto-claude-init st");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["status"],
        "`disinto-claude-init st<TAB>`"
    );
    let out = bash_completion(&root, "comp disinto-claude-init ''");
    for sub in ["migrate", "status", "verify", "undo", "completions"] {
        assert!(out.lines().any(|l| l == sub), "`<TAB>` lacks {sub}: {out}");
    }
    let out = bash_completion(&root, "comp disinto-claude-init undo --dr");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["--dry-run"],
        "after a subcommand"
    );
}

#[test]
fn zsh_and_fish_find_the_packaged_completions_where_they_look() {
    need("zsh", "zsh");
    need("fish", "fish");
    let root = Root::installed();
    let home = tempfile::tempdir().unwrap();
    // zsh: compinit scans $fpath (Debian's zsh has /usr/share/zsh/vendor-completions in it) and
    // registers the file by its #compdef line.
    let out = output(
        Command::new("zsh")
            .arg("-f")
            .arg("-c")
            .arg(
                "fpath=(\"$1\" $fpath); autoload -U compinit && compinit -u -d \"$2\" && \
                 print -r -- \"$_comps[disinto-claude-init]\"",
            )
            .arg("zsh")
            .arg(root.join("usr/share/zsh/vendor-completions"))
            .arg(home.path().join("zcompdump"))
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", home.path()),
    );
    assert_eq!(
        out.trim(),
        "_disinto-claude-init",
        "zsh did not register it"
    );
    // fish autoloads the completions of a command it finds on PATH from $fish_complete_path, by
    // file name.
    let path = format!("{}:/usr/bin:/bin", root.join("usr/bin").display());
    let out = output(
        Command::new("fish")
            .arg("--no-config")
            .arg("-c")
            .arg("set -p fish_complete_path $argv[1]; complete -C 'disinto-claude-init st'")
            .arg(root.join("usr/share/fish/vendor_completions.d"))
            .env_clear()
            .env("PATH", &path)
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path())
            .env("XDG_DATA_HOME", home.path()),
    );
    let words: Vec<&str> = out.lines().map(|l| l.split('\t').next().unwrap()).collect();
    assert_eq!(
        words,
        ["status"],
        "fish: `disinto-claude-init st<TAB>`: {out}"
    );
}
