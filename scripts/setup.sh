#!/usr/bin/env bash
# Creates .venv (once) with torch installed first, then tunesmith and its test tools; safe to re-run.
# TORCH_SPEC picks the torch build: the default is the CPU build these machines hold on disk;
# on a GPU machine use e.g. TORCH_SPEC="torch==2.13.0" with your CUDA index in PIP_INDEX_URL.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
# EXTRAS: the optional groups to install; the demo needs none, the test suite needs them all.
EXTRAS=${EXTRAS-test,quant,webui,deepspeed,ray,loggers,optim,gguf}
stamp="$VENV/.tunesmith-installed"  # holds the extras installed; redone when pyproject.toml changes
missing=""
for extra in ${EXTRAS//,/ }; do
  if [ ! -f "$stamp" ] || ! grep -qx "$extra" "$stamp"; then missing="$missing $extra"; fi
done
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ -n "$missing" ]; then
  "$VENV/bin/python" -m pip install -q "$TORCH_SPEC"
  torch_before=$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')
  # The constraint keeps pip from swapping torch for another (multi-GB CUDA) build while resolving.
  echo "torch==${torch_before%%+*}" > "$VENV/torch-constraint.txt"
  installed=$( { [ -f "$stamp" ] && [ ! pyproject.toml -nt "$stamp" ] && cat "$stamp"; echo "${EXTRAS//,/$'\n'}"; } \
    | sed '/^$/d' | sort -u | paste -sd, -)
  echo "setup: installing tunesmith${installed:+ with extras $installed} into $VENV"
  PIP_CONSTRAINT="$VENV/torch-constraint.txt" "$VENV/bin/python" -m pip install -q -e ".${installed:+[$installed]}"
  torch_after=$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')
  if [ "$torch_before" != "$torch_after" ]; then
    echo "setup: pip replaced torch $torch_before with $torch_after; aborting" >&2
    exit 1
  fi
  echo "${installed//,/$'\n'}" > "$stamp"
fi
