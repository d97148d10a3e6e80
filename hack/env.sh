# Common environment for hack/ scripts (sourced). Every cache lives outside the repo.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export INFERPOOL_CACHE=${INFERPOOL_CACHE:-$HOME/.cache/inferpool}
export INFERPOOL_MODELS=${INFERPOOL_MODELS:-$INFERPOOL_CACHE/models}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$INFERPOOL_CACHE/target}
mkdir -p "$INFERPOOL_CACHE"
cd "$root"
