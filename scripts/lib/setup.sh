# Sourced by scripts/test and scripts/demo: installs what the build and tests need on a fresh
# Debian 12 machine, idempotently, and sets CLIPCAP_ROOT, CLIPCAP_PYTHON and PATH.
set -euo pipefail
CLIPCAP_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CLIPCAP_ROOT

clipcap_install_apt() {
    local wanted missing=() pkg sudo=""
    wanted=$(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$CLIPCAP_ROOT/scripts/apt-packages.txt")
    for pkg in $wanted; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "setup: installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}

clipcap_install_python() {
    local venv="$CLIPCAP_ROOT/.venv"
    local stamp="$venv/.requirements"
    if [ ! -x "$venv/bin/python" ]; then
        # Debian's own python3 (pyenv or others may shadow it on developer machines).
        local py=/usr/bin/python3
        [ -x "$py" ] || py=python3
        "$py" -m venv "$venv"
    fi
    if ! cmp -s "$CLIPCAP_ROOT/scripts/requirements-test.txt" "$stamp"; then
        "$venv/bin/pip" install -q --disable-pip-version-check \
            -r "$CLIPCAP_ROOT/scripts/requirements-test.txt"
        cp "$CLIPCAP_ROOT/scripts/requirements-test.txt" "$stamp"
    fi
    export CLIPCAP_PYTHON="$venv/bin/python"
}

clipcap_cuda_home() {
    for d in "${CUDA_HOME:-}" /usr/local/cuda; do
        if [ -n "$d" ] && [ -x "$d/bin/nvcc" ]; then
            echo "$d"
            return 0
        fi
    done
    return 1
}
