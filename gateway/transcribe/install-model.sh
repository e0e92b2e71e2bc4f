#!/usr/bin/env bash
# Download, checksum and unpack an English Vosk model (needs internet on this box).
#
#   bash gateway/transcribe/install-model.sh [TARGET_DIR]      (default TARGET_DIR: /var/lib/gateway/models)
#   source gateway/transcribe/install-model.sh; install_vosk_model [TARGET_DIR]
#
# The archive is verified against a pinned SHA-256 before anything is unpacked; a mismatch stops the install and
# leaves any model already installed untouched. The model is unpacked next to its final place and renamed into it,
# so a half-finished install never looks like a model. Afterwards, set in the gateway's config:
#
#   [transcribe]
#   model_path = "TARGET_DIR/vosk-model-small-en-us-0.15"

# A mirror (or a local copy for an offline box) may be given with GATEWAY_VOSK_MODEL_URL; the pinned
# checksum still applies unless GATEWAY_VOSK_MODEL_SHA256 names another archive deliberately.
VOSK_MODEL_NAME="${GATEWAY_VOSK_MODEL_NAME:-vosk-model-small-en-us-0.15}"
VOSK_MODEL_URL="${GATEWAY_VOSK_MODEL_URL:-https://alphacephei.com/vosk/models/${VOSK_MODEL_NAME}.zip}"
VOSK_MODEL_SHA256="${GATEWAY_VOSK_MODEL_SHA256:-30f26242c4eb449f948e42cb302dd7a686cb29a3423a8367f99ff41780942498}"
VOSK_MODEL_BYTES=41205931

install_vosk_model() {
    local target="${1:-/var/lib/gateway/models}"
    local final="$target/$VOSK_MODEL_NAME"
    if [ -f "$final/am/final.mdl" ] && [ -f "$final/conf/model.conf" ]; then
        echo "install-model: $final is already installed" >&2
        echo "$final"
        return 0
    fi
    mkdir -p "$target" || { echo "install-model: cannot create $target" >&2; return 1; }
    local work
    work="$(mktemp -d "$target/.download.XXXXXX")" || return 1
    local zip="$work/$VOSK_MODEL_NAME.zip"
    echo "install-model: downloading $VOSK_MODEL_URL (about $((VOSK_MODEL_BYTES / 1024 / 1024)) MB)" >&2
    # Progress: a bar on a terminal, nothing but these plain lines in a log.
    if command -v curl >/dev/null 2>&1; then
        if [ -t 2 ]; then
            curl -fL --progress-bar --retry 3 --connect-timeout 20 -o "$zip" "$VOSK_MODEL_URL"
        else
            curl -fsSL --retry 3 --connect-timeout 20 -o "$zip" "$VOSK_MODEL_URL"
        fi
    elif command -v wget >/dev/null 2>&1; then
        if [ -t 2 ]; then wget -q --show-progress -O "$zip" "$VOSK_MODEL_URL"; else wget -q -O "$zip" "$VOSK_MODEL_URL"; fi
    else
        echo "install-model: neither curl nor wget is installed (apt-get install curl)" >&2
        rm -rf "$work"
        return 1
    fi || { echo "install-model: download failed (no internet on this box?)" >&2; rm -rf "$work"; return 1; }
    local got
    echo "install-model: downloaded $(($(stat -c %s "$zip") / 1024 / 1024)) MB; checking its SHA-256" >&2
    got="$(sha256sum "$zip" | cut -d' ' -f1)"
    if [ "$got" != "$VOSK_MODEL_SHA256" ]; then
        echo "install-model: checksum mismatch for $VOSK_MODEL_NAME.zip: got $got, expected $VOSK_MODEL_SHA256;" \
            "nothing was installed (a proxy or a broken download?)" >&2
        rm -rf "$work"
        return 1
    fi
    echo "install-model: checksum ok; unpacking" >&2
    if command -v unzip >/dev/null 2>&1; then
        unzip -q "$zip" -d "$work/unpacked"
    else
        python3 -m zipfile -e "$zip" "$work/unpacked"
    fi || { echo "install-model: could not unpack the archive" >&2; rm -rf "$work"; return 1; }
    if [ ! -f "$work/unpacked/$VOSK_MODEL_NAME/am/final.mdl" ]; then
        echo "install-model: the archive does not contain $VOSK_MODEL_NAME/am/final.mdl" >&2
        rm -rf "$work"
        return 1
    fi
    rm -rf "$final"
    mv "$work/unpacked/$VOSK_MODEL_NAME" "$final"
    rm -rf "$work"
    echo "install-model: installed $final; set transcribe.model_path = \"$final\"" >&2
    echo "$final"
}

# Run directly (not sourced): install now.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    install_vosk_model "$@"
fi
