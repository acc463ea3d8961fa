#!/usr/bin/env bash
# test.sh: install what is missing, lint, build, and run every test: the unit suites (plain and under
# AddressSanitizer + UndefinedBehaviorSanitizer), the fuzz targets for a bounded time, and the
# integration tests against a real docker-registry and real clients (skopeo, podman, ctr, dockerd).
#   UNIT_ONLY=1 skips the integration tests; TEST_REGEX=... limits ctest to matching tests;
#   REGSLIM_TEST_PORT_BASE moves the integration tests' loopback ports (default 17100, 100 per test).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
jobs=$(nproc)
bash "$top/scripts/deps.sh" test

echo "== lint (STYLE.md rules the compiler does not check)"
bash "$top/scripts/lint.sh"

echo "== build (release) and all tests"
cmake -S "$top" -B "$top/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DREGSLIM_TEST_PORT_BASE="${REGSLIM_TEST_PORT_BASE:-17100}" > /dev/null
cmake --build "$top/build" -j "$jobs" > /dev/null
labels=()
[ -z "${UNIT_ONLY:-}" ] || labels=(-L unit)
(cd "$top/build" && ctest --output-on-failure --timeout 900 ${TEST_REGEX:+-R "$TEST_REGEX"} "${labels[@]}")

echo "== unit tests under ASan + UBSan"
cmake -S "$top" -B "$top/build-asan" -DCMAKE_BUILD_TYPE=Debug -DREGSLIM_SANITIZE=ON > /dev/null
cmake --build "$top/build-asan" -j "$jobs" > /dev/null
(cd "$top/build-asan" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --output-on-failure -L unit ${TEST_REGEX:+-R "$TEST_REGEX"})

if [ -d "$top/tests/fuzz" ] && ls "$top"/tests/fuzz/fuzz_*.c > /dev/null 2>&1; then
  echo "== fuzz targets (bounded)"
  CC=clang cmake -S "$top" -B "$top/build-fuzz" -DCMAKE_BUILD_TYPE=Debug -DREGSLIM_FUZZ=ON -DREGSLIM_TESTS=ON > /dev/null
  cmake --build "$top/build-fuzz" -j "$jobs" > /dev/null
  (cd "$top/build-fuzz" && ctest --output-on-failure -L fuzz)
fi
