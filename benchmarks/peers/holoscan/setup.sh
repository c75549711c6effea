#!/usr/bin/env bash
# Build the Holoscan peer's own virtual environment (never a SonoFlow runtime dependency).
#
#   bash benchmarks/peers/holoscan/setup.sh        # creates benchmarks/peers/holoscan/.venv
#
# Holoscan SDK 4.6.0 from PyPI (holoscan-cu12) runs CPU-only here: its GPU operators are
# unavailable, its Python operators, schedulers and data-flow tracking work once the
# nvidia-cuda-runtime-cu12 package's lib folder is on LD_LIBRARY_PATH (run.sh sets it).
# SonoFlow is installed into the same venv (editable, from this checkout) so the peer calls the
# very same stage functions (Stage.process).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3
if [ ! -x "$here/.venv/bin/python" ]; then
  "$python" -m venv "$here/.venv"
fi
"$here/.venv/bin/pip" install -q --upgrade pip
"$here/.venv/bin/pip" install -q "holoscan-cu12==4.6.0" "nvidia-cuda-runtime-cu12" -e "$repo"
echo "holoscan peer venv ready: $here/.venv"
