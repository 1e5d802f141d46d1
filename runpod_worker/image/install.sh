#!/usr/bin/env bash
# Installs the worker image's whole Python environment from requirements.lock in one pip step, with
# --no-deps (the lock is already resolved), then has pip check it. The Dockerfile runs this; so can a
# developer, into any Python 3.12 virtualenv:
#
#   runpod_worker/image/install.sh PYTHON [DIFFUSERS_SOURCE]
#
# DIFFUSERS_SOURCE (optional): a local clone of diffusers at the lock's pinned commit, installed in place
# of the lock's git URL (for a machine that reaches PyPI but not GitHub). The commit is checked.
set -euo pipefail
python=${1:?usage: install.sh PYTHON [DIFFUSERS_SOURCE]}
here=$(cd "$(dirname "$0")" && pwd)
lock="$here/../requirements.lock"
pin=$(grep -E '^diffusers @ git\+' "$lock")
commit=${pin##*@}
if [ -n "${2:-}" ]; then
  head=$(git -C "$2" rev-parse HEAD)
  [ "$head" = "$commit" ] || { echo "install.sh: $2 is at $head, the lock pins diffusers $commit" >&2; exit 1; }
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  sed "s|^diffusers @ git+.*|diffusers @ file://$(cd "$2" && pwd)|" "$lock" > "$scratch/requirements.lock"
  lock="$scratch/requirements.lock"
fi
"$python" -m pip install --no-cache-dir --no-deps --require-virtualenv -r "$lock"
"$python" -m pip check
