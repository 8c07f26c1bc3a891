#!/usr/bin/env bash
# Install genrec-bench into a virtual environment, with its extras ("dev" for the tests).
#
#   scripts/install.sh [EXTRAS]        e.g. scripts/install.sh dev
#
# - Uses the active virtualenv/conda environment if there is one, else creates ./.venv.
# - Installs torch ONLY where none is importable: then the CPU build pinned below
#   ($TORCH_SPEC, default torch==2.13.0; on a machine with a local wheel of that version pip
#   takes it from there). A GPU user's own torch is left alone.
# - Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"

if [[ -n "${VIRTUAL_ENV:-}" ]]; then
  PY="$VIRTUAL_ENV/bin/python"
elif [[ -n "${CONDA_PREFIX:-}" ]]; then
  PY="$CONDA_PREFIX/bin/python"
else
  if [[ ! -x .venv/bin/python ]]; then
    "${PYTHON:-python3}" -c 'import sys; assert sys.version_info >= (3, 10), "genrec-bench needs Python >= 3.10"'
    "${PYTHON:-python3}" -m venv .venv
  fi
  PY="$PWD/.venv/bin/python"
fi

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "[install] no torch importable in $PY: installing $TORCH_SPEC"
  "$PY" -m pip install --quiet "$TORCH_SPEC"
else
  echo "[install] keeping the installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
fi

TARGET="."
[[ -n "$EXTRAS" ]] && TARGET=".[$EXTRAS]"
"$PY" -m pip install --quiet -e "$TARGET"
echo "[install] genrec-bench installed in $(dirname "$(dirname "$PY")")"
