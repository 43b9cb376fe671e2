#!/usr/bin/env bash
# First thing to run on a fresh machine: set up .venv, then `napari-unet demo`.
# Extra arguments go to the demo command.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
exec napari-unet demo "$@"
