# disinto_setup_claude_config: the `disinto init` step that moves Claude Code's config into the
# factory's shared CLAUDE_CONFIG_DIR (see docs/disinto-init.md). Source this file, then call:
#
#     disinto_setup_claude_config              # apply: disinto-claude-init --yes --wait --env-file "$FACTORY_ROOT/.env" --agent-uid 1000
#     disinto_setup_claude_config --dry-run    # preview only (disinto init --dry-run)
#
# The factory may already be running (init calls this after `docker compose up`): --wait queues
# the agents behind the switch instead of refusing (up to 600 s, the agent wrapper's own limit).
# Any further arguments are passed to disinto-claude-init (e.g. --home DIR, --shared-dir DIR,
# --wait=SECONDS to wait longer).
# Returns 0 when init may go on, non-zero (the tool's exit code, or 127 when it is not
# installed) when init must stop. Safe under `set -euo pipefail`. Messages go to stderr.
# On success (not a dry run) it exports CLAUDE_SHARED_DIR and CLAUDE_CONFIG_DIR as the env file
# now sets them, so the rest of init (docker compose, ...) sees the new values.
disinto_setup_claude_config() {
    local bin="${DISINTO_CLAUDE_INIT:-disinto-claude-init}"
    local mode=apply arg rc=0 env_file value
    for arg in "$@"; do
        case "$arg" in
            -n | --dry-run) mode=preview ;;
        esac
    done
    if [ -z "${FACTORY_ROOT:-}" ]; then
        echo "disinto init: FACTORY_ROOT is not set, so the factory's .env cannot be found;" \
            "run disinto init from the factory checkout." >&2
        return 2
    fi
    env_file="$FACTORY_ROOT/.env"
    if ! command -v "$bin" >/dev/null 2>&1; then
        echo "disinto init: '$bin' is not installed (not found in PATH=$PATH)." \
            "Install it (copy the release binary to /usr/local/bin/disinto-claude-init)," \
            "then re-run disinto init." >&2
        return 127
    fi

    # A .env from before the migration may have exported CLAUDE_CONFIG_DIR=$HOME/.claude into
    # this shell. The tool takes the process environment before the env file, and that value
    # is the very directory being moved: do not hand it over (the env file's copy is replaced).
    (
        # shellcheck disable=SC2088  # "~/.claude" literally, as a hand-written .env may say it
        case "${CLAUDE_CONFIG_DIR:-}" in
            "${HOME:-}/.claude" | "${HOME:-}/.claude/" | "~/.claude" | "~/.claude/") unset CLAUDE_CONFIG_DIR ;;
        esac
        # The agents' uid (disinto's images: `useradd -u 1000 agent`): verify then requires it
        # to read and write the config dir and the credentials, so init stops (exit 5) rather
        # than start agents that cannot log in.
        exec "$bin" --yes --wait --env-file "$env_file" --agent-uid "${DISINTO_AGENT_UID:-1000}" "$@"
    ) || rc=$?

    case "$rc" in
        0)
            if [ "$mode" = preview ]; then
                echo "disinto init: Claude config: the plan above is what disinto init would do;" \
                    "nothing was changed." >&2
                return 0
            fi
            # Pick up the values the tool wrote, for the rest of this init run.
            # shellcheck disable=SC1090  # the factory's .env, sourced as disinto init does
            if [ -f "$env_file" ]; then
                value=$(unset CLAUDE_SHARED_DIR; set -a; . "$env_file" >/dev/null 2>&1; printf '%s' "${CLAUDE_SHARED_DIR:-}") || true
                if [ -n "$value" ]; then export CLAUDE_SHARED_DIR="$value"; fi
                value=$(unset CLAUDE_CONFIG_DIR; set -a; . "$env_file" >/dev/null 2>&1; printf '%s' "${CLAUDE_CONFIG_DIR:-}") || true
                if [ -n "$value" ]; then export CLAUDE_CONFIG_DIR="$value"; fi
            fi
            echo "disinto init: Claude config is shared: CLAUDE_CONFIG_DIR=${CLAUDE_CONFIG_DIR:-?}" \
                "(recorded in $env_file)." >&2
            return 0
            ;;
        1)
            echo "disinto init: moving Claude's config failed and was rolled back; nothing was changed." \
                "Fix the cause printed above (disk space, permissions), then re-run disinto init." >&2
            ;;
        2)
            echo "disinto init: $bin rejected its arguments or settings (printed above); nothing was changed." \
                "Fix the value it names; if it is an unknown option, this disinto expects a newer" \
                "$bin (check: $bin --version)." >&2
            ;;
        3)
            if [ "$mode" = preview ]; then
                echo "disinto init: Claude config: the real run would stop here; nothing was changed." >&2
            else
                echo "disinto init: stopped: the Claude config on this machine needs a decision from you;" \
                    "nothing was changed." >&2
            fi
            echo "disinto init: do what the 'fix:' line above says, then re-run disinto init" \
                "(preview first with: $bin --dry-run --wait --env-file '$env_file')." >&2
            ;;
        4)
            echo "disinto init: $bin did not get its confirmation; nothing was changed." \
                "Re-run disinto init, or run '$bin --env-file $env_file' by hand to answer the prompt." >&2
            ;;
        5)
            echo "disinto init: Claude's config is in the shared dir, but verify found problems (listed" \
                "above, each with its fix). Fix them, check with '$bin verify --env-file $env_file'," \
                "then re-run disinto init." >&2
            ;;
        6)
            echo "disinto init: STOP: the migration failed and undoing it failed too: the home is half" \
                "migrated. Do not start agents. The journal named above records every step: see the" \
                "state with '$bin status', fix the cause, then reverse it with '$bin undo --yes'" \
                "and re-run disinto init." >&2
            ;;
        *)
            echo "disinto init: $bin ended with status $rc (killed?); it keeps a journal, so" \
                "re-run disinto init to resume, or '$bin undo --yes' to reverse." >&2
            ;;
    esac
    return "$rc"
}
