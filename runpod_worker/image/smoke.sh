#!/usr/bin/env bash
# The image's build-time smoke: builds a tiny FLUX.1-dev and has the real AI Toolkit train it through the
# unmodified handler and the local RunPod stand-in (python -m runpod_worker.smoke). The Dockerfile runs it so
# that an image that cannot train is never pushed; a developer runs the same against a checkout:
#
#   runpod_worker/image/smoke.sh PYTHON AI_TOOLKIT_DIR [smoke options...]
set -euo pipefail
python=${1:?usage: smoke.sh PYTHON AI_TOOLKIT_DIR [options]}
toolkit=${2:?usage: smoke.sh PYTHON AI_TOOLKIT_DIR [options]}
shift 2
cd "$(dirname "$0")/../.."
AI_TOOLKIT_DIR=$toolkit exec "$python" -m runpod_worker.smoke --ai-toolkit "$toolkit" "$@"
