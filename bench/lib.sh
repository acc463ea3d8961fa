#!/usr/bin/env bash
# lib.sh: what the benchmarks share (sourced by bench/*.sh; defines functions only).
#   bench_doc_append DOC SECTION RUNFILE   put RUNFILE's text at the end of DOC's section SECTION
#                                          (a "## " heading; before the next "## " heading), or
#                                          append the section and the run to DOC when it has none
#   bench_upload_blob REGISTRY REPO FILE   a monolithic blob upload (POST, then PUT ?digest=) to
#                                          http://REGISTRY; prints the digest; non-zero on failure
#   bench_wrk_reqs FILE, bench_wrk_bytes_per_s FILE, bench_wrk_errs FILE
#                                          requests/s, bytes/s, and errors + non-2xx answers
#                                          from a wrk summary in FILE

bench_doc_append() {
	local doc=$1 section=$2 run=$3
	awk -v runf="$run" -v h="$section" '
		function emit(  l) { while ((getline l < runf) > 0) print l; close(runf); done = 1 }
		$0 == h { in_s = 1; print; next }
		in_s && !done && /^## / { emit(); in_s = 0 }
		{ print }
		END {
			if (!done && in_s) { print ""; emit() }
			else if (!done) { print ""; print h; print ""; emit() }
		}' "$doc" > "$doc.bench-tmp" && mv "$doc.bench-tmp" "$doc"
}

bench_upload_blob() {
	local reg=$1 repo=$2 file=$3 digest loc st
	digest=sha256:$(sha256sum < "$file" | cut -d' ' -f1)
	loc=$(curl -s --max-time 30 -X POST -D - -o /dev/null "http://$reg/v2/$repo/blobs/uploads/" | tr -d '\r' |
		awk -F': ' 'tolower($1)=="location"{print $2}')
	[ -n "$loc" ] || { echo "bench_upload_blob: the upload to $reg/$repo did not start" >&2; return 1; }
	case $loc in http*) ;; *) loc=http://$reg$loc ;; esac
	case $loc in *\?*) loc="$loc&digest=$digest" ;; *) loc="$loc?digest=$digest" ;; esac
	st=$(curl -s --max-time 600 -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: application/octet-stream' \
		--data-binary "@$file" "$loc")
	[ "$st" = 201 ] || { echo "bench_upload_blob: the upload to $reg/$repo answered $st" >&2; return 1; }
	echo "$digest"
}

bench_wrk_reqs() { awk '/^Requests\/sec:/{printf "%.0f", $2}' "$1"; }
bench_wrk_bytes_per_s() {
	awk '/^Transfer\/sec:/{v=$2; u=v; sub(/[0-9.]+/, "", u); sub(/[A-Za-z]+$/, "", v);
		m = (u=="KB") ? 1024 : (u=="MB") ? 1048576 : (u=="GB") ? 1073741824 : 1; printf "%.0f", v * m}' "$1"
}
bench_wrk_errs() { awk '/Non-2xx/{n+=$NF} /Socket errors/{gsub(/,/, ""); n+=$4+$6+$8+$10} END{print n+0}' "$1"; }
