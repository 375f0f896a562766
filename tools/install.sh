#!/usr/bin/env bash
# `make install` (and CI's fresh venv): opengen and its extras into the venv $1 (default .venv), editable.
#
# The packages are installed by uv (from PyPI, into the venv first): it unpacks the wheels on every core, some 6 GB with
# torch's, where pip takes two and a half minutes on one. uv does not read pip's configuration, so the indexes, the
# local wheel folders and the constraints pip is configured with (`pip config list`, PIP_* variables) are handed to it:
# both resolve from the same places and pick the same releases. Modules are byte-compiled when first imported, not all
# 19,000 at install (the few that every process imports are imported once below).
# Where uv cannot be had or fails, pip does the same install.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
PY=${PYTHON:-python3}
EXTRAS='.[dev,text,teach]'
test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
BIN=$VENV/bin

uv_args() {   # pip's configured sources and constraints as uv options, one per line
  "$BIN/python" - <<'EOF'
import shlex, subprocess, sys
opts = {'index-url': '--index-url', 'extra-index-url': '--extra-index-url', 'find-links': '--find-links',
        'constraint': '--constraint'}
out = subprocess.run([sys.executable, '-m', 'pip', 'config', 'list'], capture_output=True, text=True).stdout
seen = set()
for line in out.splitlines():
    key, _, val = line.partition('=')
    opt = opts.get(key.rsplit('.', 1)[-1])
    if not opt: continue
    for v in shlex.split(val.strip().strip("'\"")):
        if (opt, v) not in seen: seen.add((opt, v)); print(opt); print(v)
EOF
}

with_uv() {
  "$BIN/python" -m pip install -q --disable-pip-version-check uv || return 1
  local args; mapfile -t args < <(uv_args)
  # pip's choice among several indexes: the newest release found on any of them (uv's default takes the first index's)
  "$BIN/uv" pip install --python "$BIN/python" --no-config --index-strategy unsafe-best-match "${args[@]}" -e "$EXTRAS"
}

with_pip() {
  "$BIN/pip" install --no-compile -e "$EXTRAS"
  "$BIN/python" -m compileall -q -j 0 "$VENV/lib" > /dev/null 2>&1 || true   # some dependencies' files are not Python 3
}

t0=$(date +%s)
if with_uv; then how=uv; else echo 'uv could not install the packages: pip installs them instead'; with_pip; how=pip; fi
# the modules every process of the workbook imports, byte-compiled once: where PYTHONDONTWRITEBYTECODE is set (as on
# some machines), nothing else keeps compiled files, and each process would compile torch again (8 s, not 3, per import)
env -u PYTHONDONTWRITEBYTECODE "$BIN/python" -c 'import torch, torchvision, matplotlib.pyplot, pandas, IPython, ipykernel.kernelapp, nbclient, opengen.cli, opengen.grading' 
# a kernel spec that points at this venv's python, whatever is first on PATH
"$BIN/python" -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (opengen)"
echo "installed with $how in $(( $(date +%s) - t0 )) s"
