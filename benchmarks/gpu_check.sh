#!/usr/bin/env bash
# The GPU figures in one table (benchmarks/gpu_check.py): training patches/s and busy share per precision,
# detection km²/h in margin and blend modes (fp32, bf16) with their pixel agreement, peak GPU memory, 2-GPU DDP.
#
#   bash benchmarks/gpu_check.sh [--device cuda|cpu] [--quick] [--out FILE [--overwrite]] [--workdir DIR] [--record]
#
# Under 8 minutes on one GPU. `--device cpu --quick` tests the script on a CPU in about a minute.
# Python: $FLAIRKIT_PYTHON, else the repository's .venv, else python3 on the PATH.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${FLAIRKIT_PYTHON:-}"
if [ -z "$python" ]; then
    if [ -x "$here/../.venv/bin/python" ]; then python="$here/../.venv/bin/python"; else python=python3; fi
fi
exec "$python" "$here/gpu_check.py" "$@"
