#!/usr/bin/env bash
# Install everything the tests need and run the whole test suite (README's second command).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; the browser test will be skipped"
fi
python -m pip install -q -e ".[test]"
python -m ruff check decodelab tests
python -m pytest -q --durations=15 "$@"
