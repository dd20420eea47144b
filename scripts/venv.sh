# Sourced by scripts/serve and scripts/test: make .venv and install the project into it.
# ensure_venv EXTRAS STAMP: install `.[EXTRAS]` when pyproject.toml is newer than STAMP.

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_venv() {
  local repo extras stamp
  repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  extras="$1"
  stamp="$repo/.venv/$2"
  # Debian ships venv's pip bootstrap (ensurepip) in its own package.
  if ! python3 -c 'import ensurepip' 2>/dev/null; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  fi
  # A venv left without pip (an earlier run stopped half way) is made again, not reused.
  if ! "$repo/.venv/bin/python" -m pip --version >/dev/null 2>&1; then
    python3 -m venv --clear "$repo/.venv"
    rm -f "$repo"/.venv/.installed-*
  fi
  if [ ! -f "$stamp" ] || [ "$repo/pyproject.toml" -nt "$stamp" ]; then
    "$repo/.venv/bin/python" -m pip install --quiet --upgrade pip
    "$repo/.venv/bin/python" -m pip install --quiet -e "$repo[$extras]"
    touch "$stamp"
  fi
}
