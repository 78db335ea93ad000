# Shared start of the benchmark scripts, sourced right after `set -eu`:
#   . "$(dirname "$0")/bench-lib.sh"
# Moves to the repository root and sets build (the script's BUILD_DIR
# argument, default build), STREAMSVC, BOOTSTRAPSVC and DISKFARM.
cd "$(dirname "$0")/../.."
build=$(realpath "${1:-build}")
STREAMSVC=$build/streamsvc/streamsvc
BOOTSTRAPSVC=$build/bootstrap/bootstrapsvc
DISKFARM=$build/console/diskfarm

# bench_need TOOL...: skip the benchmark (exit 77) naming the first tool
# missing.
bench_need () {
  local t
  for t in "$@"; do
    command -v "$t" >/dev/null || { echo "bench: $t missing"; exit 77; }
  done
}
