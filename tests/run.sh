#!/usr/bin/env bash
# The one test command (README, .ci/run): installs what the suite needs on a fresh Debian
# machine (redis-server, prometheus/promtool, a venv with the project), lints, type-checks,
# then runs pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing Debian packages: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/pytest "$@"

# The other Pythons the project claims (requires-python >= 3.11; the image runs 3.12): the worker
# and producer core, in a venv each, after the whole suite above. Only on a full run (no arguments).
# A Python that is not installed is skipped, saying so.
(($# == 0)) || exit 0
CORE_TESTS=(
  tests/test_core.py tests/test_settings_cli.py tests/test_packaging.py
  tests/test_erlang.py tests/test_producer.py tests/test_allowlist.py
)
for v in 3.12 3.13; do
  py=""  # the first that runs: a pyenv install, then python3.X on PATH (a pyenv shim may not run)
  for cand in $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/"python$v" 2>/dev/null | sort -V -r) \
    $(command -v "python$v" || true); do
    if "$cand" -c 'import venv' >/dev/null 2>&1; then
      py="$cand"
      break
    fi
  done
  if [ -z "$py" ]; then
    echo "skipping Python $v: no python$v on PATH or under pyenv"
    continue
  fi
  echo "Python $v ($py): the worker and producer core"
  [ -x ".venv-$v/bin/python" ] || "$py" -m venv ".venv-$v"
  ".venv-$v/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
  ".venv-$v/bin/pytest" -q -m "not slow" "${CORE_TESTS[@]}"
done
