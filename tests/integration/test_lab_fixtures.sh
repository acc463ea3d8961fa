#!/bin/bash
# test_lab_fixtures: the lab's fixture images are what the other tests assume (tests/lab/FIXTURES.md).
#
# tests/lab/fixtures.sh tiny-only against the plain, htpasswd and token registries, then, read
# back with curl, skopeo and umoci (never regslim):
#  - every tag of the plain registry has its manifest type, its layer media types, and a
#    top-level mediaType field exactly where FIXTURES.md says (none in tiny's OCI manifests);
#  - multi is an index / a manifest list of linux/amd64 and linux/arm64/v8, both tiny's layers;
#  - the auth and token registries hold tiny (v2s2) and multi (index) for the lab user only;
#  - tiny unpacks (umoci) to the documented tree: whiteouts applied, one hard-linked inode,
#    the symlink, sizes, modes, owners; its config and history; its layers' tar sizes;
#  - tiny, multi and edge are reproducible: a second build in another lab is identical, file for
#    file; edge's second layer is stored uncompressed and its whiteouts are in the tar;
#  - `layer` names a blob whose sha256 is its name and fails for a layer that does not exist;
#    sizes.tsv has tiny's rows.
# big is not built here (root, the network, minutes): test_optimize.sh uses it when present.
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
lab_setup
upstream_start all none

FX=$RS_LAB_DIR/fixtures.sh
W=$REGSLIM_LAB/fx
OCI=$REGSLIM_LAB/fixtures/oci
mkdir -p "$W"
MT_V2S2=application/vnd.docker.distribution.manifest.v2+json
MT_LIST=application/vnd.docker.distribution.manifest.list.v2+json
MT_OCI=application/vnd.oci.image.manifest.v1+json
MT_INDEX=application/vnd.oci.image.index.v1+json
L_V2S2=application/vnd.docker.image.rootfs.diff.tar.gzip
L_TAR=application/vnd.oci.image.layer.v1.tar
ACCEPT="$MT_OCI, $MT_V2S2, $MT_INDEX, $MT_LIST"

if ! timeout 300 bash "$FX" tiny-only > "$LOGS/fixtures.log" 2>&1; then
	fail fixtures_tiny_only "$(tail -3 "$LOGS/fixtures.log" | tr '\n' ' ')"
	finish
fi
pass fixtures_tiny_only

# fetch REGISTRY REPO REF OUT [curl args]: the manifest in OUT, its Content-Type on stdout.
fetch() {
	curl -sf --max-time 10 -H "Accept: $ACCEPT" "${@:5}" -D "$4.h" -o "$4" "http://$1/v2/$2/manifests/$3" &&
		tr -d '\r' < "$4.h" | sed -n 's/^[Cc]ontent-[Tt]ype: *//p'
}

# ---------------------------------------------------------------- tags of the plain registry

# repo:tag, manifest type, layer type, top-level mediaType field (yes/no)
while read -r ref mt lt field; do
	name=tag_${ref//[\/:]/_}
	ct=$(fetch "$REG_PLAIN" "${ref%:*}" "${ref##*:}" "$W/$name.json")
	expect_eq "${name}_content_type" "$ct" "$mt"
	expect "${name}_layers" "jq -e --arg t $lt '.layers | length == 2 and all(.mediaType == \$t)' $W/$name.json" \
		"layers are not 2 × $lt: $(jq -c '[.layers[]?.mediaType]' "$W/$name.json" 2> /dev/null)"
	got=$(jq -r 'if has("mediaType") then "yes" else "no" end' "$W/$name.json" 2> /dev/null)
	expect_eq "${name}_mediatype_field" "$got" "$field"
done << EOF
lab/tiny:latest $MT_V2S2 $L_V2S2 yes
library/tiny:latest $MT_V2S2 $L_V2S2 yes
lab/tiny:oci $MT_OCI $L_TAR+gzip no
lab/tiny:zstd $MT_OCI $L_TAR+zstd no
lab/tiny:raw $MT_OCI $L_TAR no
EOF

# the four tiny tags carry the same two layers (uncompressed digests) under different compressions
ids=$(for t in latest oci zstd raw; do
	timeout 60 skopeo inspect --tls-verify=false --config "docker://$REG_PLAIN/lab/tiny:$t" | jq -c .rootfs.diff_ids
done | sort -u | wc -l)
expect_eq tiny_tags_same_diff_ids "$ids" 1

# multi: platforms of the index and of the lists; each platform manifest has tiny's layers
while read -r ref mt pmt lt field; do
	name=tag_${ref//[\/:]/_}
	ct=$(fetch "$REG_PLAIN" "${ref%:*}" "${ref##*:}" "$W/$name.json")
	expect_eq "${name}_content_type" "$ct" "$mt"
	expect_eq "${name}_platforms" \
		"$(jq -r '[.manifests[]?.platform | "\(.os)/\(.architecture)/\(.variant // "")"] | join(" ")' "$W/$name.json")" \
		"linux/amd64/ linux/arm64/v8"
	n=0
	for d in $(jq -r '.manifests[]?.digest' "$W/$name.json"); do
		n=$((n + 1))
		pct=$(fetch "$REG_PLAIN" "${ref%:*}" "$d" "$W/$name-$n.json")
		expect_eq "${name}_platform${n}_type" "$pct" "$pmt"
		expect "${name}_platform${n}_layers" \
			"jq -e --arg t $lt '.layers | length == 2 and all(.mediaType == \$t)' $W/$name-$n.json" "not 2 × $lt"
		got=$(jq -r 'if has("mediaType") then "yes" else "no" end' "$W/$name-$n.json" 2> /dev/null)
		expect_eq "${name}_platform${n}_mediatype_field" "$got" "$field"
	done
done << EOF
lab/multi:latest $MT_INDEX $MT_OCI $L_TAR+gzip no
lab/multi:v2s2 $MT_LIST $MT_V2S2 $L_V2S2 yes
library/multi:latest $MT_LIST $MT_V2S2 $L_V2S2 yes
EOF
arm=$(timeout 60 skopeo inspect --tls-verify=false --override-arch arm64 --override-variant v8 --config \
	"docker://$REG_PLAIN/lab/multi:latest" | jq -c '[.architecture, .variant, .config.Labels["org.example.arch"]]')
expect_eq multi_arm64_config "$arm" '["arm64","v8","arm64"]'

# ---------------------------------------------------------------- auth and token registries

for reg in "$REG_AUTH" "$REG_TOKEN"; do
	for rt in "library/tiny:latest $MT_V2S2" "lab/tiny:latest $MT_V2S2" "lab/multi:latest $MT_INDEX"; do
		ref=${rt% *}
		got=$(timeout 60 skopeo inspect --raw --tls-verify=false --creds "$LAB_USER:$LAB_PASS" "docker://$reg/$ref" 2> "$W/auth.err" |
			jq -r .mediaType)
		expect_eq "registry_${reg##*:}_${ref//[\/:]/_}" "$got" "${rt#* }"
	done
done
expect_eq auth_registry_refuses_anonymous \
	"$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "http://$REG_AUTH/v2/library/tiny/manifests/latest")" 401

# ---------------------------------------------------------------- tiny's content

if umoci_rootfs "docker://$REG_PLAIN/library/tiny:latest" "$W/tiny" > "$LOGS/umoci.log" 2>&1; then
	got=$(cd "$W/tiny/rootfs" && find . -mindepth 1 -printf '%P %y %m %U:%G %s %n %l\n' | sed 's/ $//' | sort)
	want="data d 755 0:0
data/a-again.txt f 644 0:0 1000 1
data/hard.txt f 644 0:0 700 2
data/link l 777 0:0 7 1 new.txt
data/new.txt f 644 0:0 700 2
etc d 755 0:0
etc/os-release f 644 0:0 36 1
hello.sh f 755 0:0 31 1
usr d 755 0:0
usr/share d 755 0:0
usr/share/doc d 755 0:0
usr/share/doc/tiny d 755 0:0
usr/share/doc/tiny/README f 644 0:0 580 1
var d 755 0:0
var/cache d 755 0:0
var/cache/apt d 755 0:0
var/cache/apt/pkgcache.bin f 644 0:0 2048 1"
	# a directory's size and link count depend on the file system: directories are compared by
	# name, type, mode and owner, everything else exactly
	expect_eq tiny_umoci_tree "$(awk '$2 == "d" { print $1, $2, $3, $4; next } { print }' <<< "$got")" "$want"
	expect_eq tiny_hard_link_one_inode "$(stat -c %i "$W/tiny/rootfs/data/hard.txt")" \
		"$(stat -c %i "$W/tiny/rootfs/data/new.txt")"
	expect tiny_same_bytes_as_hidden "cmp -s $W/tiny/rootfs/data/a-again.txt <(head -c 1000 /dev/zero | tr '\\0' A)" \
		"data/a-again.txt is not 1000 × A"
	expect_eq tiny_mtime "$(stat -c %Y "$W/tiny/rootfs/hello.sh")" 1747699200
else
	fail tiny_umoci_unpack "$(tail -3 "$LOGS/umoci.log" | tr '\n' ' ')"
fi
cfg=$(timeout 60 skopeo inspect --tls-verify=false --config "docker://$REG_PLAIN/lab/tiny:oci" |
	jq -c '[.architecture, .os, .config.Cmd, .config.Env, .config.Labels, (.history | length), ([.history[] | select(.empty_layer)] | length)]')
expect_eq tiny_config "$cfg" '["amd64","linux",["/hello.sh"],["PATH=/bin"],{"org.example.fixture":"tiny"},3,1]'
for n in 1 2; do
	p=$(timeout 30 bash "$FX" layer tiny $n 2> /dev/null)
	expect_eq "tiny_layer${n}_tar_size" "$(gzip -dc "$p" 2> /dev/null | wc -c)" $((n == 1 ? 20480 : 10240))
	expect_eq "tiny_layer${n}_blob_named_by_digest" "$(sha256sum < "$p" | cut -d' ' -f1)" "$(basename "$p")"
done
expect_eq tiny_layer2_entries "$(gzip -dc "$(timeout 30 bash "$FX" layer tiny 2)" | timeout 30 tar -t | tr '\n' ' ')" \
	"etc/ etc/.wh.removed-later.conf data/ data/.wh..wh..opq data/new.txt data/a-again.txt data/hard.txt data/link hello.sh "
expect layer_beyond_last_fails "! timeout 30 bash $FX layer tiny 3" "layer tiny 3 did not fail"
expect_eq sizes_tsv_tiny_rows "$(grep -c '^lab/tiny:' "$REGSLIM_LAB/fixtures/sizes.tsv")" 8

# ---------------------------------------------------------------- reproducibility, edge

# tree_hash DIR...: one hash over every file below the DIRs (relative names and contents)
tree_hash() { (cd "$1" && shift && find "$@" -type f | sort | xargs sha256sum | sha256sum | cut -d' ' -f1); }
if timeout 120 bash "$FX" edge > "$LOGS/edge.log" 2>&1 &&
	REGSLIM_LAB=$W/again timeout 120 bash -c "'$FX' tiny && '$FX' multi && '$FX' edge" > "$LOGS/again.log" 2>&1; then
	set -- oci/tiny oci/tiny-zstd oci/multi oci/edge dir-tiny-raw
	expect_eq fixtures_reproducible "$(tree_hash "$W/again/fixtures" "$@")" "$(tree_hash "$REGSLIM_LAB/fixtures" "$@")"
	if timeout 60 bash "$FX" edge "$W/edge2" > "$LOGS/edge2.log" 2>&1; then
		expect_eq edge_dir_same_layout "$(tree_hash "$W/edge2" .)" "$(tree_hash "$OCI/edge" .)"
	else
		fail edge_dir "$(tail -3 "$LOGS/edge2.log" | tr '\n' ' ')"
	fi
	m=$(jq -r '.manifests[0].digest' "$OCI/edge/index.json")
	expect edge_manifest "jq -e '.mediaType == \"$MT_OCI\" and [.layers[].mediaType] == [\"$L_TAR+gzip\", \"$L_TAR\"]' \
		$OCI/edge/blobs/sha256/${m#sha256:}" "edge's manifest is not gzip + uncompressed with a mediaType"
	timeout 30 tar -tf "$(timeout 30 bash "$FX" layer edge 2)" > "$W/edge-l2.lst" 2>&1
	expect edge_layer2_whiteouts "grep -qx etc/.wh.gone $W/edge-l2.lst && grep -qxF data/.wh..wh..opq $W/edge-l2.lst" \
		"edge layer 2 (uncompressed tar) lacks its whiteouts: $(head -c 300 "$W/edge-l2.lst")"
else
	fail fixtures_rebuild "$(tail -3 "$LOGS/again.log" "$LOGS/edge.log" | tr '\n' ' ')"
fi

finish
