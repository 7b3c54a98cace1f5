# Source this: puts the project torch venv first on PATH and tells torch-sys to use it.
# (scripts/setup-torch-venv.sh creates the venv.)
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$_root/.venv/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
unset _root
