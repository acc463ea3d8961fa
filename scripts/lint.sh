#!/usr/bin/env bash
# lint.sh: the checks of STYLE.md that the compiler does not make.
#  - no sprintf, strcpy, strcat, strtok, atoi in C sources;
#  - only config/ includes jansson; only proxy/ includes libmicrohttpd or libcurl; only proxy/server/tls.c
#    includes GnuTLS; only proxy/cluster/ includes hiredis;
#  - manifests and indexes are parsed only by imagejson.c, the image walk and the optimizer's layout readers;
#  - every header compiles alone (each .h is included first in an empty unit);
#  - only proxy/store/ knows where bytes live (store internals, the data directory, store paths);
#  - the repository stands alone: no tracked file names a folder beside the checkout (the old
#    test tools' path or their variable); the test lab is tests/lab.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
rc=0
srcs=$(git ls-files '*.c' '*.h' 2> /dev/null || find config optimizer proxy tests -name '*.[ch]')
if grep -nE '(^|[^a-z_])(sprintf|strcpy|strcat|strtok|atoi)[[:space:]]*\(' $srcs; then
  echo "lint: banned function above (STYLE.md section 8)" >&2; rc=1
fi
if grep -ln '#include <jansson.h>' $srcs | grep -v '^config/' | grep -v '^tests/'; then
  echo "lint: jansson included outside config/ (STYLE.md section 1)" >&2; rc=1
fi
if grep -lnE '#include <(microhttpd|curl/curl)\.h>' $srcs | grep -v '^proxy/' | grep -v '^tests/'; then
  echo "lint: libmicrohttpd or libcurl included outside proxy/ (STYLE.md section 1)" >&2; rc=1
fi
if grep -ln '#include <hiredis/' $srcs | grep -v '^proxy/cluster/' | grep -v '^tests/'; then
  echo "lint: hiredis included outside proxy/cluster/ (STYLE.md section 6: third-party headers stay in their module)" >&2; rc=1
fi
if grep -ln '#include <gnutls/' $srcs | grep -v '^proxy/server/tls\.c$' | grep -v '^tests/'; then
  echo "lint: GnuTLS included outside proxy/server/tls.c (STYLE.md section 6: third-party headers stay in their module)" >&2; rc=1
fi
incs="-Iconfig -Ioptimizer $(for r in proxy/*/; do printf -- '-I%s ' "${r%/}"; done) -I."
for h in $(printf '%s\n' $srcs | grep -E '^(config|optimizer|proxy)/.*\.h$'); do
  if ! printf '#include "%s"\n' "$h" | cc -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror $incs \
      $(pkg-config --cflags libmicrohttpd libcurl 2> /dev/null) -fsyntax-only -x c - 2> /tmp/lint-h.$$; then
    echo "lint: $h does not compile alone (STYLE.md section 6):" >&2; head -5 /tmp/lint-h.$$ >&2; rc=1
  fi
done
rm -f /tmp/lint-h.$$
# the pattern is assembled from pieces, so that this line does not match itself
outside="\\.\\./sha""red|/work/sha""red|RS_SHA""RED_TOOLS"
if git ls-files -z 2> /dev/null | xargs -0 -r grep -nIE "$outside" --; then
  echo "lint: a file above names something outside the repository; use tests/lab (issue 9)" >&2; rc=1
fi
# no function over 150 lines in the libraries (issue 10; STYLE.md section 1 asks for ~100): a
# function starts at a '{' in column 0 after its signature and ends at the next '}' in column 0
long=$(printf '%s\n' $srcs | grep -E '^(config|optimizer|proxy)/.*\.c$' | xargs awk '
  FNR == 1 { start = 0 }
  /^[A-Za-z_].*\(/ { sig = $0; sigline = FNR }
  /^\{/ { start = FNR }
  /^\}/ { if (start && FNR - start + 1 > 150) printf "%s:%d: %d lines: %s\n", FILENAME, sigline, FNR - start + 1, sig; start = 0 }')
if [ -n "$long" ]; then
  printf '%s\n' "$long" >&2
  echo "lint: a function above is longer than 150 lines; split it along a seam you can name" >&2; rc=1
fi
# one index -> manifest -> config/layers walk (issue 10, config/imagewalk.c): nothing else names the
# manifest and index parsers but imagejson itself and the optimizer's layout readers, which rewrite
# the documents rather than walk them (a new loop over a parsed index or manifest goes through the walk)
walk_ok='^(config/imagejson\.[ch]|config/imagewalk\.c|optimizer/(layout|pipeline|pipeline_base)\.c)$'
if printf '%s\n' $srcs | grep -E '^(config|optimizer|proxy)/' | xargs grep -lE 'imagejson_parse_(index|manifest)' |
    grep -vE "$walk_ok"; then
  echo "lint: a file above parses manifests or indexes itself; walk them with config/imagewalk.h (issue 10)" >&2; rc=1
fi
# the storage interface (issue 10, DESIGN.md "Layout": store/): only proxy/store/ knows where bytes live.
# Outside it nothing includes a driver's internals (tests of the store and of those internals excepted), names the data
# directory (cli/ passes the option on) or spells a path under it ("%s/tmp/...", "%s/optimized", a blob's fan-out; an OCI layout's
# "%s/blobs/sha256/%s" is not the store's).
internals='#include "(blobstore|push|store_driver)\.h"'
if grep -nE "$internals" $srcs | grep -vE '^(proxy/store/|tests/unit/test_(blobstore|push|store)\.c:|tests/fixtures/store_fixture\.[ch]:)'; then
  echo "lint: a file above includes the store's internals; use store.h (docs/architecture.md)" >&2; rc=1
fi
outside_store=$(printf '%s\n' $srcs | grep -E '^proxy/.*\.[ch]$' | grep -vE '^proxy/(store|cli)/' || true)
if [ -n "$outside_store" ] && grep -nwE 'data_dir' $outside_store | grep -vF '\"data_dir\"'; then
  echo "lint: a file above names the data directory outside proxy/store/ and proxy/cli/; ask the store (store.h)" >&2; rc=1
fi
if [ -n "$outside_store" ] &&
   grep -nE '"%s/((manifests|tags|links|tmp|push|uploads|optimized|gate)[/"]|blobs/sha256/%\.2s)' $outside_store; then
  echo "lint: a file above builds a store path outside proxy/store/; use store.h (scratch, documents, objects)" >&2; rc=1
fi
# proxy/'s rooms and their one-way doors (issue 10, docs/architecture.md): a room includes the
# headers of rooms below it only; gate/, optimize/ and sign/ share a level, so do cluster/ and upstream/
# (the store and the API use both; neither knows the other); obs/ is the lowest.
declare -A rank=([cli]=0 [api]=1 [gate]=2 [optimize]=2 [sign]=2 [store]=3 [cluster]=4 [upstream]=4 [server]=5 [auth]=6 [obs]=7)
declare -A room_of
for h in proxy/*/*.h; do
  r=${h#proxy/}; room_of[$(basename "$h")]=${r%%/*}
done
for f in proxy/*/*.[ch]; do
  r=${f#proxy/}; r=${r%%/*}
  [ -n "${rank[$r]:-}" ] || { echo "lint: $f is in proxy/$r/, a room the lint does not know" >&2; rc=1; continue; }
  for inc in $(sed -n 's/^#include "\([^"]*\)".*/\1/p' "$f"); do
    o=${room_of[$inc]:-}
    if [ -n "$o" ] && [ "$o" != "$r" ] && [ "${rank[$o]}" -le "${rank[$r]}" ]; then
      echo "lint: $f (room $r) includes $inc of room $o: doors point down only (docs/architecture.md)" >&2; rc=1
    fi
  done
done
[ $rc -eq 0 ] && echo "lint: ok"
exit $rc
