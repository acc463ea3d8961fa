#!/usr/bin/env python3
"""imagegen.py - the lab's small, generated images, written as OCI layouts byte for byte.

Every tar entry, timestamp, owner, compression setting and JSON document is fixed here, so a
layout comes out identical on every run (the same Python and zlib give the same bytes). No
container tool is involved: the layouts are the input that skopeo pushes and regslim reads.

    imagegen.py tiny  LAYOUT   tiny: two layers with every layer edge case (tag latest)
    imagegen.py multi LAYOUT   tiny's layers under two platforms (tags latest, amd64, arm64, index)
    imagegen.py edge  LAYOUT   the optimizer's edge cases: devices, fifo, long names, xattrs,
                               a file over a directory, hard links across layers (tag latest)
    imagegen.py soak  LAYOUT [COUNT [KIB]]
                               COUNT distinct small images (default 40) for bench/soak.sh: tags
                               s0..s<COUNT-1>, each a layer of KIB KiB (default 1024) of seeded
                               incompressible bytes plus files the default strip rules remove

tiny's and multi's per-platform manifests carry no top-level mediaType (as umoci writes them);
edge's manifest and multi's index do. Layers are gzip (level 9, no name, mtime 0) except edge's
second layer, which is stored uncompressed.
"""

import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

EPOCH = 1747699200  # 2025-05-20T00:00:00Z
EPOCH_TEXT = "2025-05-20T00:00:00Z"

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_TAR = "application/vnd.oci.image.layer.v1.tar"
MT_TGZ = MT_TAR + "+gzip"
REF_NAME = "org.opencontainers.image.ref.name"


def entry(name, kind="f", data=None, **attrs):
    """One tar member: kind f(ile) d(ir) h(ard link) l (symlink) c(har device) p (fifo)."""
    e = {"name": name, "kind": kind, "data": data}
    e.update(attrs)
    return e


def tar_bytes(entries, fmt):
    """The tar archive of ENTRIES in FMT (tarfile.PAX_FORMAT or GNU_FORMAT), in the given order."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tf:
        for e in entries:
            ti = tarfile.TarInfo(e["name"])
            ti.mtime = e.get("mtime", EPOCH)
            ti.uid, ti.gid = e.get("uid", 0), e.get("gid", 0)
            ti.uname = ti.gname = "root"
            kind = e["kind"]
            ti.mode = e.get("mode", 0o755 if kind == "d" else 0o644)
            if kind == "d":
                ti.type = tarfile.DIRTYPE
            elif kind == "h":
                ti.type, ti.linkname = tarfile.LNKTYPE, e["link"]
            elif kind == "l":
                ti.type, ti.linkname = tarfile.SYMTYPE, e["link"]
            elif kind == "c":
                ti.type, ti.devmajor, ti.devminor = tarfile.CHRTYPE, e["dev"][0], e["dev"][1]
            elif kind == "p":
                ti.type = tarfile.FIFOTYPE
            if "pax" in e:
                ti.pax_headers = dict(e["pax"])
            body = None
            if kind == "f":
                body = e["data"] or b""
                ti.size = len(body)
                body = io.BytesIO(body)
            tf.addfile(ti, body)
    return out.getvalue()


class Layout:
    """An OCI image layout being written: blobs by digest, index.json entries in order."""

    def __init__(self, root):
        self.root = root
        self.refs = []
        os.makedirs(os.path.join(root, "blobs", "sha256"), exist_ok=True)

    def blob(self, data, media_type):
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(self.root, "blobs", "sha256", digest), "wb") as f:
            f.write(data)
        return {"mediaType": media_type, "digest": "sha256:" + digest, "size": len(data)}

    def json_blob(self, doc, media_type):
        return self.blob(json.dumps(doc, separators=(",", ":")).encode(), media_type)

    def layer(self, tar, compress):
        """Store TAR as a layer; returns (descriptor, diff_id)."""
        diff_id = "sha256:" + hashlib.sha256(tar).hexdigest()
        if compress:
            return self.blob(gzip.compress(tar, compresslevel=9, mtime=0), MT_TGZ), diff_id
        return self.blob(tar, MT_TAR), diff_id

    def manifest(self, config_desc, layer_descs, with_media_type):
        doc = {"schemaVersion": 2}
        if with_media_type:
            doc["mediaType"] = MT_MANIFEST
        doc["config"] = config_desc
        doc["layers"] = layer_descs
        return self.json_blob(doc, MT_MANIFEST)

    def tag(self, desc, name):
        d = dict(desc)
        d["annotations"] = {REF_NAME: name}
        self.refs.append(d)

    def close(self):
        with open(os.path.join(self.root, "oci-layout"), "w") as f:
            f.write('{"imageLayoutVersion":"1.0.0"}')
        with open(os.path.join(self.root, "index.json"), "w") as f:
            f.write(json.dumps({"schemaVersion": 2, "manifests": self.refs}, separators=(",", ":")))


# ---------------------------------------------------------------- tiny

HELLO = b"#!/bin/sh\necho hello from tiny\n"


def tiny_layers():
    """tiny's two layers (PAX): 20480 and 10240 bytes."""
    dirs = ["etc", "data", "data/sub", "usr", "usr/share", "usr/share/doc", "usr/share/doc/tiny",
            "var", "var/cache", "var/cache/apt"]
    lower = [entry(d, "d") for d in dirs] + [
        entry("etc/os-release", data=b'NAME="regslim tiny"\nID=regslim-tiny\n'),
        entry("etc/removed-later.conf", data=b"removed=later\n"),
        entry("data/a.txt", data=b"A" * 1000),
        entry("data/b.txt", data=b"B" * 1000),
        entry("data/sub/c.txt", data=b"C" * 500),
        entry("usr/share/doc/tiny/README", data=b"tiny: documentation a policy strips\n" * 16
              + b"x" * 4),  # 580 bytes
        entry("var/cache/apt/pkgcache.bin", data=bytes(i % 256 for i in range(2048))),
        entry("hello.sh", data=HELLO, mode=0o755),
    ]
    upper = [
        entry("etc", "d"),
        entry("etc/.wh.removed-later.conf"),  # plain whiteout
        entry("data", "d"),
        entry("data/.wh..wh..opq"),  # opaque: hides data/a.txt, data/b.txt, data/sub/
        entry("data/new.txt", data=b"N" * 700),
        entry("data/a-again.txt", data=b"A" * 1000),  # the bytes of the hidden data/a.txt
        entry("data/hard.txt", "h", link="data/new.txt"),
        entry("data/link", "l", link="new.txt", mode=0o777),
        entry("hello.sh", data=HELLO, mode=0o755),  # identical rewrite
    ]
    return tar_bytes(lower, tarfile.PAX_FORMAT), tar_bytes(upper, tarfile.PAX_FORMAT)


def tiny_config(diff_ids, arch="amd64", variant=None):
    labels = {"org.example.fixture": "tiny"}
    history = [
        {"created": EPOCH_TEXT, "created_by": "ADD layer1.tar /"},
        {"created": EPOCH_TEXT, "created_by": "ADD layer2.tar / # whiteouts, links, rewrites"},
        {"created": EPOCH_TEXT, "created_by": 'CMD ["/hello.sh"]', "empty_layer": True},
    ]
    cfg = {"created": EPOCH_TEXT, "architecture": arch, "os": "linux"}
    if variant:
        cfg["variant"] = variant
        labels["org.example.arch"] = arch
        history.append({"created": EPOCH_TEXT, "created_by": "LABEL org.example.arch=" + arch,
                        "empty_layer": True})
    cfg["config"] = {"Env": ["PATH=/bin"], "Cmd": ["/hello.sh"], "Labels": labels}
    cfg["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    cfg["history"] = history
    return cfg


def tiny_image(lay, arch="amd64", variant=None):
    """Write tiny's blobs for one platform into LAY; returns the manifest's descriptor."""
    descs, ids = [], []
    for tar in tiny_layers():
        d, i = lay.layer(tar, compress=True)
        descs.append(d)
        ids.append(i)
    cfg = lay.json_blob(tiny_config(ids, arch, variant), MT_CONFIG)
    return lay.manifest(cfg, descs, with_media_type=False)


def build_tiny(root):
    lay = Layout(root)
    lay.tag(tiny_image(lay), "latest")
    lay.close()


def build_multi(root):
    lay = Layout(root)
    amd = tiny_image(lay)
    arm = tiny_image(lay, "arm64", "v8")
    lay.tag(amd, "latest")
    lay.tag(amd, "amd64")
    lay.tag(arm, "arm64")
    plats = [(amd, {"architecture": "amd64", "os": "linux"}),
             (arm, {"architecture": "arm64", "os": "linux", "variant": "v8"})]
    index = {"schemaVersion": 2, "mediaType": MT_INDEX,
             "manifests": [dict(d, platform=p) for d, p in plats]}
    lay.tag(lay.json_blob(index, MT_INDEX), "index")
    lay.close()


# ---------------------------------------------------------------- edge

def edge_layers():
    """Layer 1 (GNU format, gzip) and layer 2 (PAX, stored raw) of the edge-case image."""
    deep = "usr/lib/" + "/".join("component%02d" % i for i in range(12)) + "/a-file-with-a-long-name.txt"
    lower = [
        entry("bin", "d"),
        entry("bin/sh", data=b"#!/bin/sh shell\n", mode=0o755),
        entry("bin/sh-link", "h", link="bin/sh"),
        entry("bin/ln", "l", link="sh"),
        entry("etc", "d"),
        entry("etc/gone", data=b"gone\n"),
        entry("etc/owned", data=b"owned\n", uid=1000, gid=1000, mode=0o600),
        entry("data", "d"),
        entry("data/a", data=b"a" * 1000),
        entry("data/sub", "d"),
        entry("data/sub/b", data=b"b" * 3000),
        entry("usr", "d"),
        entry("usr/share", "d"),
        entry("usr/share/doc", "d"),
        entry("usr/share/doc/p", "d"),
        entry("usr/share/doc/p/README", data=b"docs, linked twice\n" * 10),
        entry("usr/share/doc/p/copyright", data=b"(c) someone\n"),
        entry("usr/lib", "d"),
        entry("usr/lib/x", "d"),
        entry("usr/lib/x/__pycache__", "d"),
        entry("usr/lib/x/__pycache__/m.cpython-311.pyc", data=b"\x42\x0d\x0d\x0a" * 50),
        entry(deep, data=b"long name\n"),
        entry("opt", "d"),
        entry("opt/inside", data=b"replaced with its directory\n"),
        entry("dev", "d"),
        entry("dev/null", "c", dev=(1, 3), mode=0o666),
        entry("dev/fifo", "p"),
        entry("var", "d"),
        entry("var/tmp", "d", mode=0o1777),
        entry("var/tmp/junk", data=b"junk" * 100),
    ]
    upper = [
        entry("etc/.wh.gone"),
        entry("data/.wh..wh..opq"),
        entry("data/new", data=b"n" * 700),
        entry("bin/sh", data=b"#!/bin/sh shell\n", mode=0o755),
        entry("bin/tool", "h", link="usr/share/doc/p/README"),
        entry("bin/tool2", "h", link="usr/share/doc/p/README"),
        entry("opt", data=b"a file where a directory was\n"),
        entry("usr/lib/x/new.py", data=b"print(2)\n"),
        entry("usr/lib/xattr-file", data=b"with xattrs\n",
              pax={"SCHILY.xattr.user.test": "value-1", "mtime": "1747699200.123456789"}),
    ]
    return tar_bytes(lower, tarfile.GNU_FORMAT), tar_bytes(upper, tarfile.PAX_FORMAT)


def build_edge(root):
    lay = Layout(root)
    lower, upper = edge_layers()
    d1, i1 = lay.layer(lower, compress=True)
    d2, i2 = lay.layer(upper, compress=False)
    cfg = {"architecture": "amd64", "os": "linux", "created": EPOCH_TEXT,
           "config": {"Cmd": ["/bin/sh"]},
           "rootfs": {"type": "layers", "diff_ids": [i1, i2]},
           "history": [{"created": EPOCH_TEXT, "created_by": "edge layer %d" % n} for n in (1, 2)]}
    man = lay.manifest(lay.json_blob(cfg, MT_CONFIG), [d1, d2], with_media_type=True)
    lay.tag(man, "latest")
    lay.close()


# ---------------------------------------------------------------- soak

def seeded_bytes(seed, size):
    """SIZE bytes that do not compress, the same for the same SEED on every run."""
    out = bytearray()
    n = 0
    while len(out) < size:
        out += hashlib.sha256(b"%s/%d" % (seed, n)).digest()
        n += 1
    return bytes(out[:size])


def build_soak(root, count=40, kib=1024):
    """COUNT images that share nothing but their base layer: tags s0..s<COUNT-1>."""
    lay = Layout(root)
    base = tar_bytes([entry("etc", "d"), entry("etc/os-release", data=b'NAME="regslim soak"\nID=soak\n')],
                     tarfile.PAX_FORMAT)
    base_desc, base_id = lay.layer(base, compress=True)
    for i in range(count):
        seed = b"soak-%d" % i
        files = [entry(d, "d") for d in ("data", "usr", "usr/share", "usr/share/doc", "usr/share/doc/soak",
                                         "var", "var/cache", "var/cache/apt")]
        files += [entry("data/payload.bin", data=seeded_bytes(seed, kib * 1024)),
                  entry("usr/share/doc/soak/README", data=b"image %d\n" % i * 64),
                  entry("var/cache/apt/pkgcache.bin", data=seeded_bytes(seed + b"-cache", 4096))]
        d, diff_id = lay.layer(tar_bytes(files, tarfile.PAX_FORMAT), compress=True)
        cfg = {"created": EPOCH_TEXT, "architecture": "amd64", "os": "linux",
               "config": {"Env": ["PATH=/bin"], "Labels": {"org.example.fixture": "soak-%d" % i}},
               "rootfs": {"type": "layers", "diff_ids": [base_id, diff_id]},
               "history": [{"created": EPOCH_TEXT, "created_by": "ADD base.tar /"},
                           {"created": EPOCH_TEXT, "created_by": "ADD soak-%d.tar /" % i}]}
        man = lay.manifest(lay.json_blob(cfg, MT_CONFIG), [base_desc, d], with_media_type=True)
        lay.tag(man, "s%d" % i)
    lay.close()


def main(argv):
    builders = {"tiny": build_tiny, "multi": build_multi, "edge": build_edge, "soak": build_soak}
    if len(argv) < 3 or argv[1] not in builders or (argv[1] != "soak" and len(argv) != 3) or len(argv) > 5:
        sys.stderr.write("usage: imagegen.py tiny|multi|edge LAYOUT | imagegen.py soak LAYOUT [COUNT [KIB]]\n")
        return 2
    if os.path.exists(os.path.join(argv[2], "index.json")):
        sys.stderr.write("imagegen.py: %s already holds a layout\n" % argv[2])
        return 1
    builders[argv[1]](argv[2], *[int(a) for a in argv[3:]])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
