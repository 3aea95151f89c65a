#!/usr/bin/env bash
# Builds the Debian package of disinto-claude-init with cargo-deb, from [package.metadata.deb]
# in Cargo.toml (docs/install.md):
#
#   /usr/bin/disinto-claude-init                                  the lean release build
#   /usr/share/man/man1/disinto-claude-init.1.gz                  from the clap definitions
#   /usr/share/bash-completion/completions/disinto-claude-init    \
#   /usr/share/zsh/vendor-completions/_disinto-claude-init         } from the binary itself
#   /usr/share/fish/vendor_completions.d/disinto-claude-init.fish /
#   /usr/share/doc/disinto-claude-init/                           README, docs, changelog, copyright
#
# Usage: scripts/package-deb.sh            then: sudo apt install ./<the path it printed>
# Output: progress on stderr; on stdout one line, the path of the .deb (the last line printed).
#
# Installs cargo-deb (`cargo install --locked cargo-deb`) when it is absent. Needs dpkg-deb and
# dpkg-shlibdeps (Debian package dpkg-dev), which computes the package's Depends: line.
# Generated files go under target/ (target/deb-assets, and target/debian for the package), never
# into the source tree. A package already built from the same inputs (sources, Cargo.toml and
# Cargo.lock, the packaged docs, this script, the toolchain and cargo-deb) is reused as it is:
# running it twice builds once. Concurrent runs wait for each other (flock).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

say() { printf 'package-deb: %s\n' "$*" >&2; }
die() {
    printf 'package-deb: %s\n' "$*" >&2
    exit 1
}
started=$SECONDS

# --- tools -----------------------------------------------------------------------------------
command -v cargo >/dev/null || die "cargo is not on PATH: a Rust toolchain is needed to build the package (https://rustup.rs)"
command -v dpkg-deb >/dev/null || die "dpkg-deb is not installed: it builds and reads .deb files. Install it: sudo apt-get install dpkg"
command -v dpkg-shlibdeps >/dev/null ||
    die "dpkg-shlibdeps is not installed: cargo-deb needs it to compute the package's dependencies (without it the package would declare none). Install it: sudo apt-get install dpkg-dev"
command -v flock >/dev/null || die "flock is not installed: it keeps two builds of the package apart. Install it: sudo apt-get install util-linux"
if ! cargo deb --version >/dev/null 2>&1; then
    say "cargo-deb is not installed: cargo install --locked cargo-deb"
    t=$SECONDS
    cargo install --locked cargo-deb ||
        die "could not install cargo-deb (see above). Install it by hand and re-run: cargo install --locked cargo-deb"
    say "installed $(cargo deb --version) in $((SECONDS - t)) s"
fi

# --- where things go -------------------------------------------------------------------------
# The real target dir (CARGO_TARGET_DIR, or a config's build.target-dir), as cargo-deb sees it.
target=$(cargo metadata --format-version 1 --no-deps --locked |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$target" ] || die "cannot find the cargo target dir (cargo metadata printed none)"
out=$target/debian
# Cargo.toml names the generated assets target/deb-assets/...: relative to this checkout, whatever
# the target dir (cargo-deb treats everything under its target/release/ as built binaries).
assets=$root/target/deb-assets
mkdir -p "$out"
exec 9>"$out/.package-deb.lock"
flock 9

# --- reuse a package built from the same inputs ----------------------------------------------
inputs() {
    {
        find src -type f -print0 | sort -z | xargs -0 sha256sum
        sha256sum Cargo.toml Cargo.lock examples/gen-man.rs scripts/package-deb.sh \
            README.md CHANGELOG.md docs/*.md docs/json-schema.json docs/disinto-init.sh docs/ansible/*
        rustc -vV
        cargo -V
        cargo deb --version
        printf 'RUSTFLAGS=%s CARGO_ENCODED_RUSTFLAGS=%s\n' "${RUSTFLAGS:-}" "${CARGO_ENCODED_RUSTFLAGS:-}"
    } | sha256sum | cut -d' ' -f1
}
stamp_file=$out/.package-deb.stamp
stamp=$(inputs)
if [ -f "$stamp_file" ]; then
    { read -r old_stamp && read -r old_deb; } <"$stamp_file" || true
    if [ "${old_stamp:-}" = "$stamp" ] && [ -n "${old_deb:-}" ] && [ -f "$old_deb" ]; then
        say "up to date: $old_deb was built from these same inputs"
        printf '%s\n' "$old_deb"
        exit 0
    fi
fi
rm -f "$stamp_file"

# --- the binary: the release profile (LTO, one codegen unit, stripped), no test features --------
say "building the release binary (cargo build --release)"
t=$SECONDS
cargo build --release --locked --quiet --bin disinto-claude-init
bin=$target/release/disinto-claude-init
say "built $bin ($(stat -c %s "$bin") bytes) in $((SECONDS - t)) s"

# --- generated assets ----------------------------------------------------------------------------
rm -rf "$assets"
mkdir -p "$assets/completions"
# Completions come from the binary being packaged (its clap definitions, and its bash fix-up).
"$bin" completions bash >"$assets/completions/disinto-claude-init"
"$bin" completions zsh >"$assets/completions/_disinto-claude-init"
"$bin" completions fish >"$assets/completions/disinto-claude-init.fish"
# The man page comes from the same clap definitions, through examples/gen-man.rs, exactly as
# docs/disinto-claude-init.1 is made. It builds with the features scripts/test.sh uses, so after
# the test suite this compiles nothing (the `failpoints` feature does not touch the CLI).
say "generating the man page (cargo run --example gen-man)"
cargo run --locked --quiet --all-features --example gen-man >"$assets/disinto-claude-init.1"
for f in "$assets/disinto-claude-init.1" "$assets"/completions/*; do
    [ -s "$f" ] || die "generated $f is empty"
done

# --- the package ---------------------------------------------------------------------------------
say "packaging (cargo deb --no-build)"
deb=$(cargo deb --no-build --locked --output "$out/" | tail -n 1)
[ -f "$deb" ] || die "cargo deb did not report the package it wrote (it printed: '$deb')"
dpkg-deb --info "$deb" >/dev/null || die "$deb is not a valid package (dpkg-deb --info fails)"
case $deb in /*) ;; *) deb=$root/$deb ;; esac
printf '%s\n%s\n' "$stamp" "$deb" >"$stamp_file"
say "built $deb ($(stat -c %s "$deb") bytes) in $((SECONDS - started)) s; install it with: sudo apt install $deb"
printf '%s\n' "$deb"
