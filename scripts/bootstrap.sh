#!/usr/bin/env bash
# Create or reuse a valid virtual environment in .venv and install xnn into it (editable, with
# test extras). Reuse only if the venv imports the pinned torch/torchvision, the package, papermill
# and a kernel, and was built from the current pyproject.toml; otherwise rebuild it from scratch.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${XNN_VENV:-.venv}
PY=${PYTHON:-python3}
stamp="$VENV/.xnn-stamp"
# the stamp covers what gets installed (dependencies, extras, entry points), not tool settings
want=$("$PY" - <<'PY'
import hashlib, json, tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
keys = ("dependencies", "optional-dependencies", "scripts", "requires-python")
print(hashlib.sha256(json.dumps({k: p.get(k) for k in keys}, sort_keys=True).encode()).hexdigest()[:16])
PY
)

valid() {
  [ -x "$VENV/bin/python" ] || return 1
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] || return 1
  "$VENV/bin/python" - <<'PY' >/dev/null 2>&1 || return 1
import torch, torchvision, papermill, ipykernel, xnn_support
assert torch.__version__.split("+")[0] == "2.14.1", torch.__version__
assert torchvision.__version__.split("+")[0] == "0.29.1", torchvision.__version__
PY
}

if valid; then
  echo "bootstrap: reusing valid virtual environment $VENV"
  exit 0
fi
echo "bootstrap: building virtual environment $VENV (about 2 minutes)"
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip setuptools wheel
"$VENV/bin/python" -m pip install --quiet -e ".[test]"
echo "$want" > "$stamp"
valid || { echo "bootstrap: the new environment failed its import check" >&2; exit 1; }
echo "bootstrap: ready ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
