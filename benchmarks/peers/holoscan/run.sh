#!/usr/bin/env bash
# Run the Holoscan peer on a job file written by `sonoflow bench` (engine holoscan-greedy /
# holoscan-event):  bash benchmarks/peers/holoscan/run.sh JOB.json
# Holoscan's PyPI wheel needs libcudart from the nvidia-cuda-runtime-cu12 package even on a
# machine without a GPU: put that package's lib folder on LD_LIBRARY_PATH.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="$here/.venv/bin/python"
[ -x "$py" ] || { echo "Holoscan peer not installed: run bash $here/setup.sh" >&2; exit 3; }
cudart="$("$py" -c 'import nvidia.cuda_runtime, os; print(os.path.join(list(nvidia.cuda_runtime.__path__)[0], "lib"))')"
export LD_LIBRARY_PATH="$cudart${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::RuntimeWarning}"  # Holoscan's stack-size hint
exec "$py" "$here/peer.py" "$@"
