#!/usr/bin/env bash
# The image's build-time smoke: for every base model the worker trains (runpod_worker.contract
# BaseModel.SUPPORTED), builds its tiny model and has the real AI Toolkit train it through the unmodified
# handler and the local RunPod stand-in (python -m runpod_worker.smoke --base-model all). The Dockerfile runs it
# so that an image that cannot train one of them is never pushed; a developer runs the same against a
# checkout, or one model with --base-model MODEL:
#
#   runpod_worker/image/smoke.sh PYTHON AI_TOOLKIT_DIR [smoke options...]
set -euo pipefail
python=${1:?usage: smoke.sh PYTHON AI_TOOLKIT_DIR [options]}
toolkit=${2:?usage: smoke.sh PYTHON AI_TOOLKIT_DIR [options]}
shift 2
case " $* " in
  *" --base-model "* | *" --base-model="*) ;;
  *) set -- --base-model all "$@" ;;
esac
cd "$(dirname "$0")/../.."
AI_TOOLKIT_DIR=$toolkit exec "$python" -m runpod_worker.smoke --ai-toolkit "$toolkit" "$@"
