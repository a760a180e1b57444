#!/usr/bin/env bash
# Set up hwnas_darts on a fresh Debian/Ubuntu machine: the Fashion-MNIST package, a virtual
# environment in .venv, torch (CPU wheel 2.13.0 unless TORCH_SPEC says otherwise), the package.
#   ./setup.sh                                  # CPU
#   TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu126" ./setup.sh   # a CUDA build
set -euo pipefail
cd "$(dirname "$0")"
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO=sudo; fi
if command -v apt-get >/dev/null 2>&1 && [ ! -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ]; then
  $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || {
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist; }
fi
PY="${PYTHON:-python3}"
[ -d .venv ] || "$PY" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q ${TORCH_SPEC:-torch==2.13.0}
python -m pip install -q -e '.[dev,litdata]'
# LitData without its torchvision requirement (this package reads shards of numpy arrays; torchvision's
# PyPI build does not import beside every torch): its other requirements come with the litdata extra above
python -m pip install -q --no-deps 'litdata>=0.2.70,<0.3'
python -c "import hwnas_darts, torch; print('hwnas_darts ready: torch', torch.__version__)"
