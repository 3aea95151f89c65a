#!/usr/bin/env bash
# A ten-second tour of disinto-claude-init in a sandbox: builds a realistic Claude Code home in a
# temporary directory and walks status, a dry run, the migration, verify, status, undo and status
# on it, then removes the sandbox. It never touches your home, your ~/.claude, /var/lib or your
# factory: every call gets --home, --shared-dir, --config-dir, --env-file and --profile inside
# the sandbox, and the variables the tool would otherwise read are cleared.
#
#   scripts/demo.sh                 # builds the binary with cargo first
#   DCI_BIN=path/to/binary scripts/demo.sh
#   DCI_DEMO_KEEP=1 scripts/demo.sh # keep the sandbox to look around (its path is printed)

# "~/.claude" in the narration is text for people, and the .bashrc line is written literally.
# shellcheck disable=SC2088,SC2016
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
if [ -n "${DCI_BIN:-}" ]; then
    bin=$DCI_BIN
else
    echo "building disinto-claude-init (cargo build)..."
    (cd "$root" && cargo build --quiet --locked)
    bin="${CARGO_TARGET_DIR:-$root/target}/debug/disinto-claude-init"
fi
[ -x "$bin" ] || { echo "demo: no executable at $bin" >&2; exit 1; }

if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then
    b=$'\e[1m' d=$'\e[2m' c=$'\e[36m' r=$'\e[0m'
else
    b='' d='' c='' r=''
fi
say() { printf '\n%s==> %s%s\n' "$b" "$*" "$r"; }
note() { printf '%s    %s%s\n' "$d" "$*" "$r"; }

sandbox=$(mktemp -d "${TMPDIR:-/tmp}/dci-demo.XXXXXX")
sandbox=$(cd "$sandbox" && pwd -P)
cleanup() {
    if [ -n "${DCI_DEMO_KEEP:-}" ]; then
        echo "sandbox kept: $sandbox"
    else
        rm -rf "$sandbox"
    fi
}
trap cleanup EXIT
chmod 755 "$sandbox"

home=$sandbox/home/demo
shared=$sandbox/var/lib/disinto/claude-shared
config=$shared/config
factory=$sandbox/factory
env_file=$factory/.env
profile=$home/.bashrc

# Nothing from the caller's environment may steer the tool elsewhere (the real config dir, the
# real state dir for the journal, the real factory); HOME points into the sandbox too.
unset CLAUDE_SHARED_DIR CLAUDE_CONFIG_DIR FACTORY_ROOT XDG_STATE_HOME SUDO_USER SUDO_UID ZDOTDIR
export HOME=$home
# The sandbox belongs to you, not to the containers' uid 1000: no ownership warning.
DISINTO_AGENT_UID=$(id -u)
export DISINTO_AGENT_UID

dci() {
    printf '%s$ disinto-claude-init %s%s\n' "$c" "$*" "$r"
    "$bin" "$@" --home "$home" --shared-dir "$shared" --config-dir "$config" \
        --env-file "$env_file" --profile "$profile"
}

# ---- a realistic home -----------------------------------------------------------------------
say "A sandbox home in $sandbox"
mkdir -p "$home" "$factory" "$sandbox/var/lib/disinto" "$home/dotfiles"
mkdir -m 700 "$home/.claude"
cd "$home/.claude"
(umask 077 && printf '%s\n' '{"claudeAiOauth":{"accessToken":"sk-ant-oat01-demo","refreshToken":"sk-ant-ort01-demo","expiresAt":1767225600000,"scopes":["user:inference"]}}' > .credentials.json)
printf '%s\n' '{"permissions":{"allow":["Bash(cargo test:*)"]},"model":"sonnet"}' > settings.json
printf '%s\n' '{"display":"fix the flaky test","timestamp":1764000000000,"project":"/home/demo/src/app"}' > history.jsonl
mkdir -p projects/-home-demo-src-app todos statsig shell-snapshots ide \
    local/node_modules/@anthropic-ai/claude-code local/node_modules/.bin
for i in 1 2 3; do
    printf '{"type":"user","sessionId":"7c1d2e3f-4a5b-4c6d-8e7f-901a2b3c4d5e","message":{"role":"user","content":"step %s"}}\n' "$i"
done > projects/-home-demo-src-app/7c1d2e3f-4a5b-4c6d-8e7f-901a2b3c4d5e.jsonl
printf '[]\n' > todos/7c1d2e3f-4a5b-4c6d-8e7f-901a2b3c4d5e-agent-7c1d2e3f-4a5b-4c6d-8e7f-901a2b3c4d5e.json
printf '#!/usr/bin/env node\nconsole.log("claude")\n' > local/node_modules/@anthropic-ai/claude-code/cli.js
chmod 755 local/node_modules/@anthropic-ai/claude-code/cli.js
ln -s ../@anthropic-ai/claude-code/cli.js local/node_modules/.bin/claude
printf '# My global instructions\nAlways run the tests.\n' > "$home/dotfiles/CLAUDE.md"
ln -s "$home/dotfiles/CLAUDE.md" CLAUDE.md
cd "$sandbox"
(umask 077 && printf '%s\n' '{"numStartups":42,"hasCompletedOnboarding":true,"mcpServers":{}}' > "$home/.claude.json")
printf '# ~/.bashrc\nexport PATH="$HOME/.local/bin:$PATH"\n' > "$profile"
(umask 077 && cat > "$env_file" <<EOF
# disinto factory environment -- holds secrets, keep 0600
FORGE_URL=https://forge.example.test
FORGE_TOKEN="abc|def&ghi"
CLAUDE_CONFIG_DIR=$home/.claude
EOF
)
note "~/.claude: credentials (0600), settings, a transcript, history, todos, a Node install with"
note "a relative link inside, and CLAUDE.md linked into a dotfiles repo; ~/.claude.json beside it;"
note "a factory .env (0600) whose CLAUDE_CONFIG_DIR still points at ~/.claude."

snapshot() {
    (cd "$sandbox" && find . -printf '%p %M %s %T@ %l\n' | sort
        find . -type f -exec md5sum {} + | sort -k2)
}
before=$(snapshot)

# ---- the tour -------------------------------------------------------------------------------
say "1. status: what is there (changes nothing)"
dci status

say "2. a dry run: exactly what would happen (changes nothing)"
dci --dry-run

say "3. the migration (--yes: no prompt; without it you are asked)"
dci --yes
note "~/.claude is now a link:      $(readlink "$home/.claude")"
note "~/.claude.json is now a link: $(readlink "$home/.claude.json")"
note "the .env now says:            $(grep '^CLAUDE_' "$env_file" | tr '\n' ' ')"

say "4. verify: is the migrated layout healthy? (exit 0 yes, 5 no)"
dci verify
note "verify: healthy"

say "5. status after"
dci status

say "6. undo: put everything back from the journal"
dci undo --yes

say "7. status: back where we started"
dci status
if [ "$before" = "$(snapshot)" ]; then
    note "every file, mode, mtime and link in the sandbox is as it was before step 3"
else
    note "the sandbox differs from before step 3:"
    diff <(printf '%s\n' "$before") <(snapshot) || true
    exit 1
fi

say "Done. The sandbox is removed on exit; try it on a real box with: disinto-claude-init --dry-run"
