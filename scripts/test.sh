#!/usr/bin/env bash
# README command #2: set up .venv and run the whole test suite on CPU (offline, one thread per process).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The web UI's browser test drives Debian's Chromium (Playwright's own browser download does not work offline).
if [ ! -x /usr/bin/chromium ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test: installing Debian's chromium for the web UI browser test (log: .venv/chromium-install.log)"
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } \
      > .venv/chromium-install.log 2>&1 || echo "test: apt-get install chromium failed; the browser test will skip"
  else
    echo "test: no chromium; the web UI browser test will skip (install it: sudo apt-get install -y chromium)"
  fi
fi
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest -q "$@"
