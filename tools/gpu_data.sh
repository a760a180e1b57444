#!/usr/bin/env bash
# Stage Fashion-MNIST for the GPU machine, which reaches no network: the four IDX files (about
# 30 MB) are copied into .gpu_data/fashion-mnist/ (ignored by git); carry `.gpu_data` with the
# device tool and point the run at it (tools/gpu_check.py --parts fmnist finds it there).
#   tools/gpu_data.sh                   # here (needs the files: apt-get install dataset-fashion-mnist)
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.gpu_data/' .git/info/exclude 2>/dev/null || echo '/.gpu_data/' >> .git/info/exclude
src=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
mkdir -p .gpu_data/fashion-mnist
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  if [ -f "$src/$f.gz" ]; then cp "$src/$f.gz" .gpu_data/fashion-mnist/
  elif [ -f "$src/$f" ]; then cp "$src/$f" .gpu_data/fashion-mnist/
  else echo "gpu_data: $src/$f(.gz) not found; install dataset-fashion-mnist or set FASHION_MNIST_DIR" >&2; exit 2; fi
done
du -sh .gpu_data
