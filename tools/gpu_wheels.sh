#!/usr/bin/env bash
# Prepare the pure-Python wheels that the bare GPU machine lacks for tools/gpu_check.py, in .whl/
# (ignored by git; carry it with the device tool). The GPU image has torch (CUDA), Lightning,
# torchmetrics, numpy, scipy, scikit-learn, matplotlib, rich, pyyaml, pillow, tabulate, tqdm and
# portalocker, but not fvcore and its small dependencies, nor pydantic (the config sections) and its
# dependencies (pydantic-core is compiled: its CPython 3.12 manylinux wheel is fetched). wandb is not
# needed: the check logs nothing.
#   tools/gpu_wheels.sh            # here, with network access to PyPI
# then on the GPU machine, from the repository root:
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
#   python3 tools/gpu_check.py --out "$OUT/gpu_check"
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
PLAT="--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any"
for spec in "fvcore==0.1.5.post20221221" "iopath==0.1.10" "yacs==0.1.8" "termcolor==2.5.0"; do
  python3 -m pip download -q --no-deps --python-version 3.12 --implementation py $PLAT -d .whl "$spec" \
    || python3 -m pip download -q --no-deps --no-binary :none: -d .whl "$spec"
done
# pydantic for the GPU image's CPython 3.12 (pydantic-core is a compiled wheel; the versions pin each other)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $PLAT -d .whl \
  "pydantic==2.14.4" "pydantic-core==2.50.5" "annotated-types==0.8.0" "typing-inspection==0.4.5" "typing-extensions==4.16.0"
# fvcore and iopath ship as source archives: build them into wheels here (pure Python)
for sdist in .whl/*.tar.gz; do
  [ -e "$sdist" ] || continue
  python3 -m pip wheel -q --no-deps -w .whl "$sdist" && rm -f "$sdist"
done
ls -la .whl
