#!/usr/bin/env bash
# README command #1: set up .venv, build a tiny model, LoRA-tune it on the bundled demo data, show before/after.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=${EXTRAS-} bash scripts/setup.sh  # the demo needs no extras (no web UI, DeepSpeed, Ray, quantization)
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/tunesmith demo "$@"
