#!/usr/bin/env bash
# Install genrec-bench into a virtual environment, with its extras ("dev" for the tests).
#
#   scripts/install.sh [EXTRAS]        e.g. scripts/install.sh dev
#
# - Uses the active virtualenv/conda environment if there is one, else creates ./.venv.
# - Installs torch ONLY where none is importable: then the CPU build pinned below
#   ($TORCH_SPEC, default torch==2.13.0; on a machine with a local wheel of that version pip
#   takes it from there). A GPU user's own torch is left alone.
# - Pins every package to constraints/quick.txt, the environment results/quick was made with
#   (pip constraints: versions only, nothing extra is installed), so that `make quick`
#   regenerates those numbers. GENREC_BENCH_CONSTRAINTS=none installs without the pins,
#   GENREC_BENCH_CONSTRAINTS=FILE with another file. The pins are skipped, with a note, where
#   they cannot describe this environment: another Python minor version than the file's, a
#   torch of another version kept or asked for with TORCH_SPEC.
# - Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-}"
TORCH_DEFAULT="torch==2.13.0"
TORCH_SPEC="${TORCH_SPEC:-$TORCH_DEFAULT}"
LOCK="${GENREC_BENCH_CONSTRAINTS:-constraints/quick.txt}"

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

PIN=()
skip_lock() { echo "[install] not using $LOCK: $1; versions may differ from those results/quick was made with"; LOCK=none; }
if [[ "$LOCK" != none ]]; then
  [[ -f "$LOCK" ]] || { echo "[install] constraints file $LOCK not found (GENREC_BENCH_CONSTRAINTS=none: install without)" >&2; exit 1; }
  want_py=$(sed -n 's/^#.*Python \([0-9]*\.[0-9]*\)\.[0-9]*.*/\1/p' "$LOCK" | head -n 1)
  have_py=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  lock_torch=$(sed -n 's/^torch==\(.*\)$/\1/p' "$LOCK")
  have_torch=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true)
  if [[ -n "$want_py" && "$want_py" != "$have_py" ]]; then
    skip_lock "it pins a Python $want_py environment, this is Python $have_py"
  elif [[ -n "$have_torch" && -n "$lock_torch" && "$have_torch" != "$lock_torch" ]]; then
    skip_lock "it pins torch $lock_torch, the installed torch $have_torch is kept"
  elif [[ -z "$have_torch" && "$TORCH_SPEC" != "$TORCH_DEFAULT" ]]; then
    skip_lock "TORCH_SPEC=$TORCH_SPEC asks for another torch"
  else
    PIN=(-c "$LOCK")
    echo "[install] pinning versions to $LOCK"
  fi
fi

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "[install] no torch importable in $PY: installing $TORCH_SPEC"
  "$PY" -m pip install --quiet ${PIN[@]+"${PIN[@]}"} "$TORCH_SPEC"
else
  echo "[install] keeping the installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
fi

TARGET="."
[[ -n "$EXTRAS" ]] && TARGET=".[$EXTRAS]"
"$PY" -m pip install --quiet ${PIN[@]+"${PIN[@]}"} -e "$TARGET"
echo "[install] genrec-bench installed in $(dirname "$(dirname "$PY")")"
