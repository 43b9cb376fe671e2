#!/usr/bin/env bash
# Set up (or refresh) the project's virtual environment in .venv:
#   1. the Debian libraries that Qt/napari and Xvfb need (only as root, only
#      when missing),
#   2. .venv itself,
#   3. torch 2.13.0 (the CPU build when there is no NVIDIA driver), then
#      napari-stroke-unet in editable mode with its test extras, pinned by
#      constraints.txt so no later requirement swaps torch for a CUDA build.
# scripts/test.sh, scripts/demo.sh and .ci/run all start here, so a user and CI
# get the same environment.  Safe to run again: step 3 is skipped while
# pyproject.toml, constraints.txt and this script are unchanged.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"

say() { printf '[setup] %s\n' "$*"; }

# --- 1. system libraries ---------------------------------------------------
APT_PACKAGES=(
    xvfb xauth libglib2.0-0 libfontconfig1 libdbus-1-3 libxkbcommon-x11-0
    libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-render-util0
    libxcb-shape0 libegl1 libxcb-cursor0 libgl1
)
if command -v dpkg-query >/dev/null 2>&1; then
    missing=()
    for pkg in "${APT_PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$pkg")
        fi
    done
    if ((${#missing[@]})); then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            say "installing system packages: ${missing[*]}"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq
            apt-get install -y -qq --no-install-recommends "${missing[@]}"
        else
            # Not fatal: the engine and CLI work without them; the napari
            # viewer and the GUI tests do not.
            say "WARNING: missing system packages (needed by the napari viewer and GUI tests):"
            say "  sudo apt-get install --no-install-recommends ${missing[*]}"
        fi
    fi
fi

# --- 2. virtual environment -------------------------------------------------
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "[setup] ERROR: napari-unet needs Python >= 3.10; '$PYTHON' is $("$PYTHON" --version 2>&1 || echo missing)." >&2
    echo "[setup] Set PYTHON=/path/to/python3.x and run again." >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"

# --- 3. Python packages -----------------------------------------------------
STAMP="$VENV/.napari-unet-setup"
want="$(cat pyproject.toml constraints.txt "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] \
    && python -c 'import napari_unet, torch' >/dev/null 2>&1; then
    say "environment up to date ($VENV)"
else
    # pip() drops the "Location ... is ignored" lines that a machine-wide
    # find-links/extra-index setting can print by the hundred; pip's own exit
    # status still counts (pipefail).
    pip() { python -m pip "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; }
    if ! command -v nvidia-smi >/dev/null 2>&1; then
        # No NVIDIA driver: take the CPU build first (on this project's
        # machines it is a local file; see constraints.txt).
        say "installing torch==2.13.0 (no CUDA found)"
        pip install -q -c constraints.txt "torch==2.13.0"
    fi
    # Until 0.1.0 this project was installed as "napari-unet", the name of an
    # unrelated PyPI project with the same import package: an old install
    # left in .venv would give napari two manifests for one package.
    if python -m pip show -q napari-unet >/dev/null 2>&1; then
        say "removing the distribution 'napari-unet' (the old name; same napari_unet package)"
        pip uninstall -q -y napari-unet
    fi
    say "installing napari-stroke-unet (editable) with test extras"
    pip install -q -c constraints.txt -e ".[testing]"
    echo "$want" >"$STAMP"
fi
python -c 'import torch, napari_unet; print(f"[setup] napari-unet {napari_unet.__version__}, torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")'
