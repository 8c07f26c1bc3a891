#!/usr/bin/env bash
# Create the separate virtualenv the RecBole parity harness (benchmarks/parity/recbole.py)
# runs RecBole in. RecBole is NOT a dependency of the suite: it lives only in this venv.
#
#   scripts/recbole_env.sh [VENV_DIR]        default ./.venv-recbole (ignored by git)
#
# The recipe that works for recbole==1.2.1 with this suite's torch:
# - torch==2.13.0 ($TORCH_SPEC), then recbole==1.2.1 WITHOUT its dependencies (its pins do not
#   resolve against a current torch), then the packages it imports, with the versions it needs:
#   numpy<2, pandas<2.3, scipy<1.13 (its LightGCN calls scipy's dok_matrix._update, which
#   scipy 1.13 removed when it rewrote dok_matrix: with 1.14.1 LightGCN fails with an
#   AttributeError), colorlog==4.7.2, colorama==0.4.4, and tqdm, scikit-learn, pyyaml, tensorboard, thop,
#   tabulate, plotly, texttable, psutil;
# - `import ray` (and ray.tune) is done by recbole.quick_start at import time, for its
#   hyper-parameter search, which the harness does not use: a stub package `ray` with an empty
#   `tune` module is written into VENV_DIR/ray-stub, and the harness puts that folder on
#   PYTHONPATH (the real ray is not installed);
# - the harness sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 when it runs RecBole, so that RecBole's
#   torch.load of its own checkpoint (the best epoch's model) works under torch >= 2.6.
# Idempotent: a second run finds everything installed and only checks the imports.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv-recbole}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
PYTHON="${PYTHON:-python3}"

if [[ ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 9), "RecBole 1.2.1 needs Python >= 3.9"'
  "$PYTHON" -m venv "$VENV"
  echo "[recbole-env] created $VENV"
fi
PY="$VENV/bin/python"

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "[recbole-env] installing $TORCH_SPEC"
  "$PY" -m pip install --quiet "$TORCH_SPEC"
fi
if ! "$PY" -m pip show recbole >/dev/null 2>&1; then
  echo "[recbole-env] installing recbole==1.2.1 (--no-deps)"
  "$PY" -m pip install --quiet --no-deps "recbole==1.2.1"
fi
"$PY" -m pip install --quiet "numpy<2" "pandas<2.3" "scipy<1.13" "colorlog==4.7.2" \
  "colorama==0.4.4" tqdm scikit-learn pyyaml tensorboard thop tabulate plotly texttable psutil

STUB="$VENV/ray-stub/ray"
if [[ ! -f "$STUB/tune.py" ]]; then
  mkdir -p "$STUB"
  cat > "$STUB/__init__.py" <<'PY'
"""A stand-in for Ray, written by scripts/recbole_env.sh: recbole.quick_start imports ray and
ray.tune at import time for hyper-parameter search, which the parity harness does not use."""
PY
  cat > "$STUB/tune.py" <<'PY'
"""Empty: see ray/__init__.py (written by scripts/recbole_env.sh)."""
PY
  echo "[recbole-env] wrote the ray stub into $VENV/ray-stub"
fi

PYTHONPATH="$VENV/ray-stub" TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 "$PY" -c \
  "import recbole, torch, scipy, numpy; from recbole.quick_start import run_recbole; \
print('[recbole-env] ok: recbole', recbole.__version__, 'torch', torch.__version__, \
'numpy', numpy.__version__, 'scipy', scipy.__version__)"
