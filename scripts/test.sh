#!/usr/bin/env bash
# The project's test command (README, CI): set up .venv, then run pytest.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"`.
# GUI tests need no display: pytest-xvfb starts Xvfb by itself.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate

# The layout's rules first (seconds): imports go one way (import-linter
# contracts in pyproject.toml) and ruff finds no problem.
echo "[test] ruff check"
ruff check napari_unet tests benchmarks docs sample_data
echo "[test] lint-imports"
lint-imports

rc=0
python -m pytest "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
    # pytest's "no tests collected": this project always has tests, so a run
    # that found none is broken (wrong path, collection filter, ...).
    echo "[test] ERROR: pytest collected no tests (exit code 5)." >&2
    exit 1
fi
exit "$rc"
