#!/usr/bin/env bash
# Local Asterisk for tests, the demo and boxes without a PBX.
#
#   local-asterisk.sh provision   install Asterisk 22 (Debian sid chroot) and the test tools if missing
#   local-asterisk.sh start       render asterisk-config/ and run Asterisk on loopback, wait until AMI answers
#   local-asterisk.sh stop        stop Asterisk and remove the chroot's bind mounts
#   local-asterisk.sh restart     stop, then start
#   local-asterisk.sh status      print state; exit 0 when running, 3 when stopped
#   local-asterisk.sh env         print the resolved settings (KEY=VALUE, host paths) for test fixtures
#   local-asterisk.sh render DIR  write the rendered *.conf into DIR (to review, or to merge into another PBX)
#
# Theory of operation: when the host has an `asterisk` binary (a distribution package) it is used directly.
# Otherwise Asterisk 22 from Debian sid lives in a minbase debootstrap chroot (default
# /var/lib/gateway/asterisk-root, override with GATEWAY_ASTERISK_ROOT); installing sid's Asterisk on the host
# would upgrade libc and hundreds of packages. The chroot shares the host network, so AMI and PJSIP bound to
# 127.0.0.1 are reachable from the host. Every step is idempotent: provisioning leaves a marker and a second run
# returns in well under a second; `start` renders the templates, and if an Asterisk with the same rendered
# configuration already answers it does nothing, otherwise it (re)starts it. One flock serialises concurrent
# callers (several test runs may share one PBX).
#
# Settings: asterisk-config/defaults.env, then the file named by GATEWAY_ASTERISK_ENV (e.g. the test suite's
# tests/realpbx/test.env), then environment variables GATEWAY_ASTERISK_<NAME>. Templates reference @NAME@; a line
# whose placeholder renders empty is dropped, so optional settings (static phone contacts, trunk address) vanish
# cleanly. Secrets left empty are generated once and kept in the state dir (mode 600).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="${GATEWAY_ASTERISK_ROOT:-/var/lib/gateway/asterisk-root}"
STATE="${GATEWAY_ASTERISK_STATE:-/var/lib/gateway/asterisk}"
CONF_NAME="gateway-asterisk"
MARKER=".gateway-asterisk-provisioned"

log() { printf 'local-asterisk: %s\n' "$*" >&2; }
die() { printf 'local-asterisk: error: %s\n' "$*" >&2; exit 1; }

need_root() { [[ $(id -u) -eq 0 ]] || die "run as root (it installs packages, chroots and bind-mounts)"; }

# --- settings -------------------------------------------------------------------------------------------
SETTING_NAMES=()

load_settings() {
    local file line key value
    declare -gA S=()
    for file in "$HERE/defaults.env" "${GATEWAY_ASTERISK_ENV:-}"; do
        [[ -n "$file" ]] || continue
        [[ -r "$file" ]] || die "settings file $file is not readable (check GATEWAY_ASTERISK_ENV)"
        while IFS= read -r line || [[ -n "$line" ]]; do
            [[ "$line" =~ ^[[:space:]]*(#|$) ]] && continue
            [[ "$line" =~ ^([A-Z0-9_]+)=(.*)$ ]] || die "$file: bad line '$line' (expected NAME=value)"
            key="${BASH_REMATCH[1]}"
            value="${BASH_REMATCH[2]}"
            [[ -v "S[$key]" ]] || SETTING_NAMES+=("$key")
            S[$key]="$value"
        done <"$file"
    done
    for key in "${SETTING_NAMES[@]}"; do
        local envname="GATEWAY_ASTERISK_$key"
        if [[ -v "$envname" ]]; then S[$key]="${!envname}"; fi
    done
    load_secrets
    validate_settings
}

load_secrets() {
    local secrets="$STATE/secrets.env" key
    mkdir -p "$STATE"
    touch "$secrets"
    chmod 600 "$secrets"
    for key in "${SETTING_NAMES[@]}"; do
        [[ "$key" == *SECRET || "$key" == *PASSWORD ]] || continue
        [[ -z "${S[$key]}" ]] || continue
        local saved
        saved="$(sed -n "s/^$key=//p" "$secrets" | tail -n1)"
        if [[ -z "$saved" ]]; then
            saved="$(head -c 18 /dev/urandom | base64 | tr -d '/+=' | head -c 24)"
            printf '%s=%s\n' "$key" "$saved" >>"$secrets"
            log "generated $key (kept in $secrets)"
        fi
        S[$key]="$saved"
    done
}

validate_settings() {
    local key
    for key in AMI_PORT SIP_PORT RTP_START RTP_END FIRST_RING_S GROUP_RING_S VM_MAX_S VM_SILENCE_S; do
        [[ "${S[$key]:-}" =~ ^[0-9]+$ ]] || die "setting $key='${S[$key]:-}' must be a whole number"
    done
    [[ "${S[AGI_ADDR]}" =~ ^[0-9.]+:[0-9]+$ ]] || die "setting AGI_ADDR='${S[AGI_ADDR]}' must be IP:PORT"
    [[ "${S[RECORDINGS_DIR]}" == /* ]] || die "setting RECORDINGS_DIR must be an absolute path"
    [[ -z "${S[WHISPER_DIR]:-}" || "${S[WHISPER_DIR]}" == /* ]] || die "setting WHISPER_DIR must be an absolute path"
    for key in "${SETTING_NAMES[@]}"; do
        # Values land in Asterisk config files: a newline or ';' (comment) would change their meaning.
        [[ "${S[$key]}" != *$'\n'* && "${S[$key]}" != *";"* ]] || die "setting $key must not contain ';' or newlines"
    done
}

# --- mode and paths ------------------------------------------------------------------------------------
host_asterisk() { command -v asterisk >/dev/null 2>&1 && [[ -z "${GATEWAY_ASTERISK_FORCE_CHROOT:-}" ]]; }

if host_asterisk; then PREFIX=""; MODE=host; else PREFIX="$ROOT"; MODE=chroot; fi
CONF_DIR="/etc/$CONF_NAME"          # as Asterisk sees it
CONF_FILE="$CONF_DIR/asterisk.conf"

in_root() { if [[ $MODE == chroot ]]; then chroot "$ROOT" "$@"; else "$@"; fi; }

# --- host tools ----------------------------------------------------------------------------------------
APT_UPDATED=0
apt_install() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    if [[ $APT_UPDATED -eq 0 ]] && ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then
        apt-get update -qq
        APT_UPDATED=1
    fi
    log "installing on the host: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The Debian mirror the host already uses; read at run time so no mirror host is written into the repository.
host_mirror() {
    local uri=""
    if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
        uri="$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' \
            /etc/apt/sources.list.d/debian.sources)"
    fi
    if [[ -z "$uri" && -r /etc/apt/sources.list ]]; then
        uri="$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' \
            /etc/apt/sources.list)"
    fi
    [[ -n "$uri" ]] || die "cannot find a Debian mirror in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"
    printf '%s\n' "$uri"
}

mount_once() { # mount_once SRC DST: bind-mount unless DST is already a mount point
    mkdir -p "$2"
    mountpoint -q "$2" || mount --bind "$1" "$2"
}

chroot_busy() { # a process other than ours still runs inside the chroot (then /proc and /dev stay)
    local link
    for link in /proc/[0-9]*/root; do
        [[ "$(readlink "$link" 2>/dev/null)" == "$ROOT" ]] && return 0
    done
    return 1
}

unmount_all() {
    [[ $MODE == chroot ]] || return 0
    local dst
    for dst in "$ROOT${S[RECORDINGS_DIR]:-/nonexistent}" "$ROOT${S[WHISPER_DIR]:-/nonexistent}" "$ROOT/dev" "$ROOT/proc"; do
        if [[ "$dst" == "$ROOT/dev" || "$dst" == "$ROOT/proc" ]] && chroot_busy; then
            log "leaving $dst mounted: other processes still run in $ROOT"
            continue
        fi
        if mountpoint -q "$dst" 2>/dev/null; then umount "$dst" 2>/dev/null || umount -l "$dst"; fi
    done
}

cmd_provision() {
    need_root
    apt_install sip-tester espeak-ng sox
    if [[ $MODE == host ]]; then
        log "using the host's Asterisk: $(asterisk -V 2>/dev/null || echo unknown version)"
        return 0
    fi
    if [[ -f "$ROOT/$MARKER" ]]; then
        return 0
    fi
    local t0=$SECONDS mirror
    apt_install debootstrap
    mirror="$(host_mirror)"
    if [[ ! -x "$ROOT/usr/bin/apt-get" ]]; then
        if [[ -e "$ROOT" ]] && [[ -n "$(ls -A "$ROOT" 2>/dev/null)" ]]; then
            [[ -f "$ROOT/.gateway-asterisk-partial" ]] || die "$ROOT exists and is not ours; pick another GATEWAY_ASTERISK_ROOT"
            unmount_all
            # Never delete through a bind mount (the recordings directory is on the same file system).
            if awk -v r="$ROOT/" 'index($2, r) == 1 { found = 1 } END { exit !found }' /proc/mounts; then
                die "$ROOT still has mounts (see /proc/mounts); run '$0 stop' first"
            fi
            log "removing the half-built chroot $ROOT"
            rm -rf --one-file-system "$ROOT"
        fi
        mkdir -p "$ROOT"
        touch "$ROOT/.gateway-asterisk-partial"
        log "debootstrap minbase sid into $ROOT"
        debootstrap --variant=minbase sid "$ROOT" "$mirror" >"$STATE/debootstrap.log" 2>&1 ||
            die "debootstrap failed; see $STATE/debootstrap.log"
    fi
    # Packages must not start services inside the chroot.
    printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
    chmod 755 "$ROOT/usr/sbin/policy-rc.d"
    mount_once /proc "$ROOT/proc"
    mount_once /dev "$ROOT/dev"
    trap 'unmount_all' EXIT
    log "installing asterisk into the chroot"
    # sid's Release file is often past its Valid-Until date on mirrors and snapshots.
    chroot "$ROOT" apt-get -qq -o Acquire::Check-Valid-Until=false update >>"$STATE/provision.log" 2>&1 ||
        die "apt-get update in the chroot failed; see $STATE/provision.log"
    chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        asterisk asterisk-modules >>"$STATE/provision.log" 2>&1 ||
        die "installing asterisk in the chroot failed; see $STATE/provision.log"
    chroot "$ROOT" apt-get clean
    unmount_all
    trap - EXIT
    rm -f "$ROOT/.gateway-asterisk-partial"
    chroot "$ROOT" asterisk -V >"$ROOT/$MARKER"
    log "provisioned $(cat "$ROOT/$MARKER") in $((SECONDS - t0)) s"
}

# --- configuration -------------------------------------------------------------------------------------
render_config() { # render_config OUTDIR
    local out="$1" src key
    mkdir -p "$out"
    local -a envpairs=()
    for key in "${SETTING_NAMES[@]}"; do envpairs+=("GWT_$key=${S[$key]}"); done
    envpairs+=("GWT_CONF_DIR=$CONF_DIR")
    for src in "$HERE"/*.conf; do
        # shellcheck disable=SC2016 # awk code, not shell
        env "${envpairs[@]}" awk '
            BEGIN { for (k in ENVIRON) if (k ~ /^GWT_/) vars[substr(k, 5)] = ENVIRON[k] }
            {
                line = $0; out = ""; drop = 0
                while ((i = index(line, "@")) > 0) {
                    rest = substr(line, i + 1); j = index(rest, "@")
                    name = substr(rest, 1, j - 1)
                    if (j == 0 || !(name in vars)) {
                        if (j > 0 && name ~ /^[A-Z0-9_]+$/) { print FILENAME ": unknown setting @" name "@" > "/dev/stderr"; exit 2 }
                        out = out substr(line, 1, i); line = rest; continue
                    }
                    if (vars[name] == "") drop = 1
                    out = out substr(line, 1, i - 1) vars[name]; line = substr(rest, j + 1)
                }
                if (!drop) print out line
            }' "$src" >"$out/$(basename "$src")" || die "rendering $src failed"
    done
    chmod 600 "$out"/*.conf
}

# --- process control -----------------------------------------------------------------------------------
pid_file() { printf '%s/asterisk.pid\n' "$STATE"; }

# Asterisk's own pid file (astrundir): the truth about which process serves this configuration, also when our
# state directory lost its copy or another caller (another GATEWAY_ASTERISK_STATE) started it.
ast_pid_file() { printf '%s%s/asterisk.pid\n' "$PREFIX" "${S[RUN_DIR]}"; }

is_asterisk() { # is_asterisk PID: alive, not a zombie, and an asterisk process
    local pid="$1" state
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    state="$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null)" || return 1
    [[ "$state" != Z && "$state" != X ]] || return 1
    [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == */asterisk ]] || grep -q asterisk "/proc/$pid/cmdline" 2>/dev/null
}

running_pid() {
    local pid
    for pid in "$(cat "$(pid_file)" 2>/dev/null || true)" "$(cat "$(ast_pid_file)" 2>/dev/null || true)"; do
        if is_asterisk "$pid"; then
            printf '%s\n' "$pid"
            return 0
        fi
    done
    return 1
}

installed_config_is() { # installed_config_is DIR: the config files Asterisk reads are exactly the ones in DIR
    local conf="$PREFIX$CONF_DIR" f
    [[ -d "$conf" ]] || return 1
    for f in "$1"/*.conf; do cmp -s "$f" "$conf/$(basename "$f")" || return 1; done
    [[ "$(ls "$conf"/*.conf | wc -l)" == "$(ls "$1"/*.conf | wc -l)" ]]
}

ami_answers() {
    # In a subshell: a failed `exec` redirection would end the calling shell.
    local banner
    # shellcheck disable=SC2016 # expanded by the inner bash
    banner="$(timeout 3 bash -c 'exec 9<>"/dev/tcp/127.0.0.1/$1" && IFS= read -r -t 2 line <&9 && printf "%s" "$line"' \
        _ "${S[AMI_PORT]}" 2>/dev/null)" || return 1
    [[ "$banner" == "Asterisk Call Manager"* ]]
}

# Directories Asterisk and the gateway share at the same path: voicemail recordings (Asterisk writes, the gateway
# reads) and spoken whisper lines (the gateway writes, Asterisk plays). Bind-mounted into the chroot.
shared_dirs() {
    mkdir -p "${S[RECORDINGS_DIR]}"
    chmod 0770 "${S[RECORDINGS_DIR]}"
    if [[ -n "${S[WHISPER_DIR]:-}" ]]; then mkdir -p "${S[WHISPER_DIR]}" && chmod 0750 "${S[WHISPER_DIR]}"; fi
    if [[ $MODE == chroot ]]; then
        mount_once "${S[RECORDINGS_DIR]}" "$ROOT${S[RECORDINGS_DIR]}"
        if [[ -n "${S[WHISPER_DIR]:-}" ]]; then mount_once "${S[WHISPER_DIR]}" "$ROOT${S[WHISPER_DIR]}"; fi
    fi
    return 0
}

cmd_start() {
    need_root
    cmd_provision
    local tmp hash core t0
    t0="$(date +%s.%N)"
    tmp="$(mktemp -d)"
    render_config "$tmp"
    hash="$(cat "$tmp"/*.conf | sha256sum | cut -c1-16)"
    # Directories and modules need a restart; the dialplan, PJSIP, AMI, RTP and the rest reload.
    core="$(cat "$tmp/asterisk.conf" "$tmp/modules.conf" | sha256sum | cut -c1-16)"
    local conf="$PREFIX$CONF_DIR"
    if running_pid >/dev/null; then
        if [[ ! -f "$STATE/config.hash" ]] && installed_config_is "$tmp" && ami_answers; then
            # Running with exactly this configuration, started under another state directory (or ours lost its
            # files): adopt it. Starting a second Asterisk here would exit at once ("already running") and was
            # once reported as a failed start while Asterisk was up.
            printf '%s\n' "$hash" >"$STATE/config.hash"
            printf '%s\n' "$core" >"$STATE/core.hash"
            running_pid >"$(pid_file)"
        fi
        if [[ "$(cat "$STATE/config.hash" 2>/dev/null)" == "$hash" ]] && ami_answers; then
            rm -rf "$tmp"
            log "already running (pid $(running_pid)) with this configuration"
            return 0
        fi
        if [[ "$(cat "$STATE/core.hash" 2>/dev/null)" == "$core" ]] && ami_answers; then
            rm -f "$conf"/*.conf
            cp "$tmp"/*.conf "$conf"/
            rm -rf "$tmp"
            shared_dirs
            timeout 30 "${IN_ROOT[@]}" asterisk -C "$CONF_FILE" -rx "core reload" >/dev/null 2>&1 ||
                die "core reload failed; see $PREFIX${S[LOG_DIR]}/messages.log"
            printf '%s\n' "$hash" >"$STATE/config.hash"
            log "configuration reloaded without a restart (pid $(running_pid))"
            return 0
        fi
        log "configuration changed: restarting"
        cmd_stop
    fi
    mkdir -p "$conf"
    rm -f "$conf"/*.conf
    cp "$tmp"/*.conf "$conf"/
    rm -rf "$tmp"
    printf '%s\n' "$hash" >"$STATE/config.hash"
    printf '%s\n' "$core" >"$STATE/core.hash"
    # cdr-custom/: cdr_custom.conf writes the call records there; it does not create the directory itself.
    mkdir -p "$PREFIX${S[LOG_DIR]}/cdr-custom" "$PREFIX${S[RUN_DIR]}" "$PREFIX${S[DATA_DIR]}/spool"
    shared_dirs
    if [[ $MODE == chroot ]]; then
        mount_once /proc "$ROOT/proc"
        mount_once /dev "$ROOT/dev"
        # Name resolution as on the host (the chroot's own /etc/hosts lacks the host name: slow lookups).
        cp /etc/hosts "$ROOT/etc/hosts"
    elif [[ -n "${S[RUN_USER]:-}" ]]; then
        chown "${S[RUN_USER]}" "$PREFIX${S[LOG_DIR]}" "$PREFIX${S[LOG_DIR]}/cdr-custom" "$PREFIX${S[RUN_DIR]}" "$PREFIX${S[DATA_DIR]}" \
            "$PREFIX${S[DATA_DIR]}/spool" "${S[RECORDINGS_DIR]}"
    fi
    local console="$PREFIX${S[LOG_DIR]}/console.log"
    rm -f "$(ast_pid_file)" # the new Asterisk writes it again; a stale one must not name another process
    # -f: stay in the foreground (we own the process); -n: no colours; -q: quiet. Never -c: with stdin at
    # /dev/null the console loops and writes megabytes.
    if [[ $MODE == chroot ]]; then
        setsid chroot "$ROOT" asterisk -C "$CONF_FILE" -f -n -q </dev/null >>"$console" 2>&1 8>&- &
    else
        setsid asterisk -C "$CONF_FILE" -f -n -q </dev/null >>"$console" 2>&1 8>&- &
    fi
    local launched=$! i pid
    printf '%s\n' "$launched" >"$(pid_file)"
    # Success means: the process we launched (or, when setsid had to fork, the Asterisk it started, as named by
    # Asterisk's own pid file) is alive AND AMI answers AND Asterisk says it is fully booted. Failure is reported
    # only when no Asterisk of this configuration is alive, never from a pid that merely changed hands.
    for ((i = 0; i < 300; i++)); do
        if ! is_asterisk "$launched"; then
            pid="$(cat "$(ast_pid_file)" 2>/dev/null || true)"
            if is_asterisk "$pid"; then
                launched="$pid"
                printf '%s\n' "$pid" >"$(pid_file)"
            else
                die "asterisk exited during start (is a port taken?); last log lines:
$(tail -n 8 "$console" "$PREFIX${S[LOG_DIR]}/messages.log" 2>/dev/null)"
            fi
        fi
        if ami_answers; then break; fi
        sleep 0.1
    done
    ((i < 300)) || die "AMI did not answer on 127.0.0.1:${S[AMI_PORT]} within 30 s; see $console"
    timeout 30 "${IN_ROOT[@]}" asterisk -C "$CONF_FILE" -rx "core waitfullybooted" >/dev/null 2>&1 ||
        die "asterisk did not finish booting within 30 s; see $console"
    pid="$(running_pid)" || die "asterisk exited right after booting; last log lines:
$(tail -n 8 "$console" "$PREFIX${S[LOG_DIR]}/messages.log" 2>/dev/null)"
    log "started (pid $pid, $MODE) in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s; AMI 127.0.0.1:${S[AMI_PORT]}, SIP ${S[SIP_BIND]}:${S[SIP_PORT]}"
}

cmd_stop() {
    need_root
    local pid i
    if pid="$(running_pid)"; then
        timeout 10 "${IN_ROOT[@]}" asterisk -C "$CONF_FILE" -rx "core stop now" >/dev/null 2>&1 || true
        for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for ((i = 0; i < 30; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        log "stopped (pid $pid)"
    else
        log "not running"
    fi
    rm -f "$(pid_file)" "$STATE/config.hash" "$STATE/core.hash"
    unmount_all
}

cmd_status() {
    local pid
    if pid="$(running_pid)"; then
        printf 'running pid=%s mode=%s ami=127.0.0.1:%s sip=%s:%s conf=%s%s\n' "$pid" "$MODE" "${S[AMI_PORT]}" \
            "${S[SIP_BIND]}" "${S[SIP_PORT]}" "$PREFIX" "$CONF_DIR"
        ami_answers || { printf 'warning: AMI does not answer on port %s\n' "${S[AMI_PORT]}"; return 1; }
        return 0
    fi
    printf 'stopped mode=%s\n' "$MODE"
    return 3
}

cmd_env() {
    local key
    for key in "${SETTING_NAMES[@]}"; do printf '%s=%s\n' "$key" "${S[$key]}"; done
    printf 'MODE=%s\nPREFIX=%s\nCONF_DIR=%s\nHOST_CONF_DIR=%s\nHOST_LOG_DIR=%s\nHOST_RECORDINGS_DIR=%s\n' \
        "$MODE" "$PREFIX" "$CONF_DIR" "$PREFIX$CONF_DIR" "$PREFIX${S[LOG_DIR]}" "${S[RECORDINGS_DIR]}"
    # The call records (cdr_custom.conf) as the host sees them: the gateway's voice.cdr_file.
    printf 'HOST_CDR_FILE=%s\n' "$PREFIX${S[LOG_DIR]}/cdr-custom/gateway-calls.csv"
}

if [[ $MODE == chroot ]]; then IN_ROOT=(chroot "$ROOT"); else IN_ROOT=(); fi

main() {
    local cmd="${1:-}"
    case "$cmd" in
    provision | start | stop | restart | status | env | render) ;;
    *) die "usage: $0 provision|start|stop|restart|status|env|render DIR" ;;
    esac
    mkdir -p "$STATE"
    load_settings
    if [[ $cmd == env ]]; then cmd_env; return; fi
    if [[ $cmd == render ]]; then
        [[ -n "${2:-}" ]] || die "usage: $0 render DIR"
        render_config "$2"
        return
    fi
    if [[ $cmd == status ]]; then cmd_status; return; fi
    # One caller at a time: several test runs can share one PBX.
    exec 8>"$STATE/lock"
    flock -w 600 8 || die "another local-asterisk.sh holds $STATE/lock"
    case "$cmd" in
    provision) cmd_provision ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart) cmd_stop; cmd_start ;;
    esac
}

main "$@"
