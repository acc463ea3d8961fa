#!/usr/bin/env bash
# run.sh [regslim serve options]: install what is missing, build, and start the proxy in the
# foreground. Without options: a Docker Hub mirror on 127.0.0.1:5000, data in ./regslim-data.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
bash "$top/scripts/deps.sh" build
cmake -S "$top" -B "$top/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DREGSLIM_TESTS=OFF > /dev/null
cmake --build "$top/build" -j "$(nproc)" --target regslim > /dev/null
exec "$top/build/proxy/regslim" serve "$@"
