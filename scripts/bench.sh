#!/usr/bin/env bash
# Whole-program benchmarks of issue 5, side by side in one run (docs/BENCHMARKS.md):
#
#   A. same filesystem, 50,000 files: `disinto-claude-init --yes` (a rename) against the
#      predecessor's `cp -a ~/.claude/. $CONFIG/ && rm -rf ~/.claude && ln -sfn` and bare `mv`;
#      target: ours <= 0.05 x predecessor.
#   B. across filesystems (home on disk, shared dir on a tmpfs), 20,000 files / 200 MB: our
#      verified copy + removal against `cp -a && rm -rf` (unverified) and bare `cp -a`;
#      target: ours <= 1.0 x `cp -a && rm -rf`.
#   C. `--dry-run` on a 50,000-file home against `du -s` of it; target: <= 2 x.
#   D. peak memory (max RSS, /usr/bin/time -v) of a cross-device migration of 200,000 files;
#      target: < 64 MiB.
#   E. (issue 13) how long `--wait` keeps the factory's agents waiting on one filesystem: the
#      time from taking ~/.claude/session.lock to releasing it, at 2,000 and 200,000 files;
#      target: <= 50 ms at both sizes (median). Measured twice per run: the tool's own figure
#      ("held off for X ms") and strace's timestamps of the two flock(2) calls on the lock file.
#
# Ratios compare hyperfine medians (this kind of machine is shared and noisy; the mean is shown
# too). Every run gets a fresh tree: hyperfine's --prepare restores a pristine copy with
# `cp -a` and `sync`s, so the measured command is only the migration, on a tree that is on disk.
#
# Usage: scripts/bench.sh            full sizes (about 15 minutes on 2 cores)
#        BENCH_QUICK=1 scripts/bench.sh   a tenth of the sizes, few runs (smoke test, ~1 minute)
#        BENCH_ONLY=E scripts/bench.sh    case E alone (add BENCH_QUICK=1 for 200 / 20,000 files)
# Env:   BENCH_DISK_DIR (default /var/tmp): where homes live (a disk filesystem);
#        BENCH_TMPFS_DIR (default /dev/shm, else a tmpfs mounted under the work dir): shared dir
#        for the cross-device cases. Must run as root only to mount a tmpfs or install packages.
# Exit status: 0 when every target is met, 1 when one is not, 2 when the setup failed.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=${BENCH_QUICK:-0}
if [ "$quick" = 1 ]; then
    n_same=5000 n_cross=2000 n_dry=5000 n_mem=20000
    runs=(--min-runs 2 --max-runs 3)
    n_lock=(200 20000) lock_runs=3
else
    n_same=50000 n_cross=20000 n_dry=50000 n_mem=200000
    runs=(--min-runs 5 --max-runs 10)
    n_lock=(2000 200000) lock_runs=7
fi
only=${BENCH_ONLY:-}
seed=${BENCH_SEED:-42}

die() {
    echo "bench: $*" >&2
    exit 2
}

# --- tools -----------------------------------------------------------------------------------
need_pkgs=()
command -v hyperfine >/dev/null || need_pkgs+=(hyperfine)
[ -x /usr/bin/time ] || need_pkgs+=(time)
command -v strace >/dev/null || need_pkgs+=(strace)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    echo "== installing ${need_pkgs[*]}"
    [ "$(id -u)" = 0 ] || die "need ${need_pkgs[*]} (apt-get install -y ${need_pkgs[*]}, as root)"
    apt-get update -qq && apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# Nothing from the caller's environment may point the tool at a real home or shared dir.
unset CLAUDE_SHARED_DIR CLAUDE_CONFIG_DIR FACTORY_ROOT XDG_STATE_HOME SUDO_USER DCI_FAILPOINTS

echo "== building (release)"
cargo build --release --locked --quiet --bin disinto-claude-init --example gen_home
bin=$PWD/target/release/disinto-claude-init
gen=$PWD/target/release/examples/gen_home

# --- work dirs ---------------------------------------------------------------------------------
disk=${BENCH_DISK_DIR:-/var/tmp}
work=$(mktemp -d "$disk/dci-bench.XXXXXX")
tmpfs_mounted=
fast=
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
    set +e
    [ -n "$fast" ] && rm -rf "$fast"
    [ -n "$tmpfs_mounted" ] && umount "$tmpfs_mounted"
    rm -rf "$work"
}
trap cleanup EXIT

dev_of() { stat -c %d "$1"; }
tmpfs_base=${BENCH_TMPFS_DIR:-/dev/shm}
if [ -d "$tmpfs_base" ] && [ "$(dev_of "$tmpfs_base")" != "$(dev_of "$work")" ]; then
    fast=$(mktemp -d "$tmpfs_base/dci-bench.XXXXXX")
else
    mkdir "$work/tmpfs"
    if mount -t tmpfs -o size=4g dci-bench "$work/tmpfs" 2>/dev/null; then
        tmpfs_mounted=$work/tmpfs
        fast=$work/tmpfs/x
        mkdir "$fast"
    fi
fi

echo "== machine"
echo "nproc $(nproc); $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'); kernel $(uname -r)"
echo "disk dir $work: $(df -T "$work" | awk 'NR==2 {print $2" on "$1}')"
[ -n "$fast" ] && echo "tmpfs dir $fast: $(df -T "$fast" | awk 'NR==2 {print $2" on "$1}')"

ours_flags=(--no-env-file --no-modify-profile --yes -q)
failed=0
results=()

# median and mean (seconds) of command number $2 (1-based) in hyperfine CSV $1
stat_of() { awk -F, -v n="$2" -v col="$3" 'NR == n + 1 {print $col}' "$1"; }
# print and record one ratio: name, ours, theirs, target, comparison (le|lt)
verdict() {
    local name=$1 ours=$2 theirs=$3 target=$4
    local ratio
    ratio=$(awk -v a="$ours" -v b="$theirs" 'BEGIN {printf "%.3f", a / b}')
    local ok
    ok=$(awk -v r="$ratio" -v t="$target" 'BEGIN {print (r <= t) ? "PASS" : "FAIL"}')
    [ "$ok" = PASS ] || failed=1
    local line
    line=$(printf '%-48s ratio %7s  (target <= %s)  %s' "$name" "$ratio" "$target" "$ok")
    results+=("$line")
    echo "$line"
}

# one informative line: label, CSV, index of the baseline, name of command 2
info() {
    awk -F, -v label="$1" -v n="$3" -v two="$4" '
        NR == 2 {om = $4; oa = $2} NR == 3 {tm = $4; ta = $2} NR == n + 1 {bm = $4}
        END {printf "   (%s: %.1f x; medians: ours %.3f s, %s %.3f s; means %.3f s, %.3f s)\n",
                    label, om / bm, om, two, tm, oa, ta}' "$2"
}

# hyperfine, quiet, CSV to $1; remaining args are passed on
hf() {
    local csv=$1
    shift
    hyperfine --style basic --export-csv "$csv" "$@" 2>&1 | grep -E '^(Benchmark|  Time|  Range)' || true
}

# --- E. the lock window of --wait ------------------------------------------------------------------
# A home like a factory's: the tree from gen_home plus the wrapper's empty session.lock. Each
# run migrates it with `--wait` under strace (only flock(2) is traced, through seccomp: the rest
# of the run is not slowed) and is then undone (a rename back), so every run sees the same tree.
median() { sort -g | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
case_e() {
    local n e home shared i out m_own m_ext
    local -a own ext
    for n in "${n_lock[@]}"; do
        echo
        echo "== E. lock window of --wait, one filesystem: $n files"
        e=$work/lock-$n
        home=$e/home shared=$e/shared
        mkdir -p "$home" "$shared"
        "$gen" --files "$n" --bytes $((n * 1000)) --seed "$seed" "$home/.claude" | awk '{printf "tree: %d files, %d dirs, %d bytes\n", $1, $2, $4}'
        : >"$home/.claude/session.lock"
        printf '{}' >"$home/.claude.json"
        sync
        own=() ext=()
        echo "load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
        for i in $(seq "$lock_runs"); do
            out=$(DISINTO_AGENT_UID=$(id -u) strace -f --seccomp-bpf -y -ttt -e trace=flock -o "$e/strace.txt" \
                "$bin" --home "$home" --shared-dir "$shared" --config-dir "$shared/config" \
                --no-env-file --no-modify-profile --yes --wait) ||
                die "E: run $i: the migration failed: $out"
            if ! [ -L "$home/.claude" ] || ! [ -d "$shared/config/projects" ]; then die "E: the migration did not happen"; fi
            own+=("$(sed -n 's/.*held off for \([0-9.]*\) ms.*/\1/p' <<<"$out")")
            # strace: from entering flock(fd</...session.lock>, LOCK_EX|LOCK_NB) to entering
            # flock(..., LOCK_UN), in ms (with -f a call may print as "<unfinished ...>")
            ext+=("$(awk '/session\.lock>, LOCK_EX/ {t0 = $2} /session\.lock>, LOCK_UN/ {t1 = $2} END {printf "%.1f", (t1 - t0) * 1000}' "$e/strace.txt")")
            "$bin" undo --home "$home" --shared-dir "$shared" --config-dir "$shared/config" \
                --no-env-file --no-modify-profile --yes -q || die "E: undo failed"
            if ! [ -d "$home/.claude" ] || [ -L "$home/.claude" ]; then die "E: undo did not restore ~/.claude"; fi
        done
        echo "load average after the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
        echo "held, the tool's figure (ms): ${own[*]}"
        echo "held, strace flock to flock (ms): ${ext[*]}"
        m_own=$(printf '%s\n' "${own[@]}" | median)
        m_ext=$(printf '%s\n' "${ext[@]}" | median)
        echo "medians: tool $m_own ms, strace $m_ext ms"
        verdict "E. lock held, $n files: strace median ms / 50 ms" "$m_ext" 50 1.0
        rm -rf "$e"
    done
}
if [ "$only" = E ]; then
    case_e
    echo
    echo "== summary"
    printf '%s\n' "${results[@]}"
    exit $failed
fi

# --- A. same filesystem --------------------------------------------------------------------------
echo
echo "== A. same filesystem: $n_same files"
a=$work/same
mkdir -p "$a"
"$gen" --files "$n_same" --seed "$seed" "$a/pristine" | awk '{printf "tree: %d files, %d dirs, %d bytes\n", $1, $2, $4}'
reset_a="rm -rf '$a/home' '$a/shared' && mkdir -p '$a/home' '$a/shared' && cp -a '$a/pristine' '$a/home/.claude' && printf '{}' > '$a/home/.claude.json' && sync"
hf "$a/hf.csv" "${runs[@]}" --prepare "$reset_a" \
    -n ours "'$bin' --home '$a/home' --shared-dir '$a/shared' --config-dir '$a/shared/config' ${ours_flags[*]}" \
    -n predecessor "mkdir -p '$a/shared/config' && chmod 700 '$a/shared/config' && cp -a '$a/home/.claude/.' '$a/shared/config/' && rm -rf '$a/home/.claude' && ln -sfn '$a/shared/config' '$a/home/.claude'" \
    -n "bare mv" "mv '$a/home/.claude' '$a/shared/config' && ln -sfn '$a/shared/config' '$a/home/.claude'"
# the last run of `ours` must have migrated: check once more, by hand
eval "$reset_a"
"$bin" --home "$a/home" --shared-dir "$a/shared" --config-dir "$a/shared/config" "${ours_flags[@]}"
if ! [ -L "$a/home/.claude" ] || ! [ -d "$a/shared/config/projects" ]; then die "A: the migration did not happen"; fi
verdict "A. same fs, $n_same files: ours / predecessor" "$(stat_of "$a/hf.csv" 1 4)" "$(stat_of "$a/hf.csv" 2 4)" 0.05
info "ours / bare mv" "$a/hf.csv" 3 predecessor

# --- C. dry run (reuses A's tree; read-only) -------------------------------------------------------
echo
echo "== C. --dry-run on a $n_dry-file home vs du -s"
c=$work/dry
mkdir -p "$c/home" "$c/shared"
if [ "$n_dry" = "$n_same" ]; then
    cp -a "$a/pristine" "$c/home/.claude"
else
    "$gen" --files "$n_dry" --seed "$seed" "$c/home/.claude" >/dev/null
fi
rm -rf "${a:?}/home" "${a:?}/shared"
sync
hf "$c/hf.csv" --warmup 2 "${runs[@]}" \
    -n "ours --dry-run" "'$bin' --home '$c/home' --shared-dir '$c/shared' --config-dir '$c/shared/config' --no-env-file --no-modify-profile --dry-run >/dev/null" \
    -n "du -s" "du -s '$c/home/.claude' >/dev/null"
verdict "C. dry run, $n_dry files: ours / du -s" "$(stat_of "$c/hf.csv" 1 4)" "$(stat_of "$c/hf.csv" 2 4)" 2
rm -rf "$c"

if [ -z "$fast" ]; then
    echo
    echo "SKIPPED B and D: no tmpfs on another filesystem ($tmpfs_base is on the disk, and mounting one failed: not root?)"
    failed=1
else
    # --- B. across filesystems -------------------------------------------------------------------
    echo
    b=$work/cross
    bytes=$((n_cross * 10000))
    echo "== B. across filesystems: $n_cross files, $bytes bytes, home on disk, shared dir on tmpfs"
    mkdir -p "$b"
    "$gen" --files "$n_cross" --bytes "$bytes" --seed "$seed" "$b/pristine" | awk '{printf "tree: %d files, %d dirs, %d bytes\n", $1, $2, $4}'
    s=$fast/cross
    reset_b="rm -rf '$b/home' '$s' && mkdir -p '$b/home' '$s' && cp -a '$b/pristine' '$b/home/.claude' && printf '{}' > '$b/home/.claude.json' && sync"
    hf "$b/hf.csv" "${runs[@]}" --prepare "$reset_b" \
        -n ours "'$bin' --home '$b/home' --shared-dir '$s' --config-dir '$s/config' ${ours_flags[*]}" \
        -n "cp -a && rm -rf" "mkdir -p '$s/config' && chmod 700 '$s/config' && cp -a '$b/home/.claude/.' '$s/config/' && rm -rf '$b/home/.claude' && ln -sfn '$s/config' '$b/home/.claude'" \
        -n "bare cp -a" "cp -a '$b/home/.claude' '$s/config'"
    eval "$reset_b"
    "$bin" --home "$b/home" --shared-dir "$s" --config-dir "$s/config" "${ours_flags[@]}"
    if ! [ -L "$b/home/.claude" ] || ! [ -d "$s/config/projects" ]; then die "B: the migration did not happen"; fi
    verdict "B. cross fs, $n_cross files: ours / cp -a && rm -rf" "$(stat_of "$b/hf.csv" 1 4)" "$(stat_of "$b/hf.csv" 2 4)" 1.0
    info "ours / bare cp -a" "$b/hf.csv" 3 "cp -a && rm -rf"
    rm -rf "$b" "$s"

    # --- D. memory ---------------------------------------------------------------------------------
    echo
    d=$work/mem
    echo "== D. peak memory: cross-device migration of $n_mem files"
    mkdir -p "$d/home"
    # Memory does not depend on file sizes (nothing holds contents): 1 KB a file keeps it quick.
    "$gen" --files "$n_mem" --bytes $((n_mem * 1000)) --seed "$seed" "$d/home/.claude" | awk '{printf "tree: %d files, %d dirs, %d bytes\n", $1, $2, $4}'
    sync
    /usr/bin/time -v "$bin" --home "$d/home" --shared-dir "$fast/mem" --config-dir "$fast/mem/config" "${ours_flags[@]}" 2>"$work/time.txt" ||
        die "D: the migration failed: $(tail -5 "$work/time.txt")"
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.txt")
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$work/time.txt")
    echo "max RSS $rss KiB ($(awk -v k="$rss" 'BEGIN {printf "%.1f", k / 1024}') MiB), wall $wall"
    verdict "D. peak RSS, $n_mem files: MiB / 64 MiB" "$(awk -v k="$rss" 'BEGIN {print k / 1024}')" 64 0.999
    rm -rf "$d" "$fast/mem"
fi

case_e

echo
echo "== summary"
printf '%s\n' "${results[@]}"
exit $failed
