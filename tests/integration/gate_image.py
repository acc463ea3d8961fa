#!/usr/bin/env python3
"""The images of the gate's early-send tests (test_gate_early.sh, test_gate_staged.sh).

  gate_image.py OUT

Writes OUT/blobs/sha256/<hex> and two OCI image manifests: OUT/bad.json (a clean gzip layer of
2 MB of random bytes, then a layer holding an OpenSSH private key and 1 MB of random bytes) and
OUT/ok.json (the clean layer alone), each with its config (User 1000). Deterministic (seeded).
"""
import gzip
import hashlib
import io
import json
import os
import random
import sys
import tarfile

out = sys.argv[1]
os.makedirs(out + "/blobs/sha256", exist_ok=True)
KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
       "-----END OPENSSH PRIVATE KEY-----\n").encode()


def put(data):
    d = hashlib.sha256(data).hexdigest()
    with open(f"{out}/blobs/sha256/{d}", "wb") as f:
        f.write(data)
    return "sha256:" + d, len(data)


def layer(entries, seed):
    r = random.Random(seed)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for path, data in entries:
            ti = tarfile.TarInfo(path)
            ti.mtime = 1700000000
            data = r.randbytes(data) if isinstance(data, int) else data
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    raw = buf.getvalue()
    d, n = put(gzip.compress(raw, compresslevel=1, mtime=0))
    return {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": n}, \
        "sha256:" + hashlib.sha256(raw).hexdigest()


clean, cdiff = layer([("app/a.bin", 2000000)], 1)
keyed, kdiff = layer([("root/.ssh/id_ed25519", KEY), ("app/b.bin", 1000000)], 2)
for name, ls, diffs in [("bad", [clean, keyed], [cdiff, kdiff]), ("ok", [clean], [cdiff])]:
    cfg = {"architecture": "amd64", "os": "linux", "config": {"User": "1000"},
           "rootfs": {"type": "layers", "diff_ids": diffs}}
    cd, cn = put(json.dumps(cfg).encode())
    man = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
           "layers": ls}
    with open(f"{out}/{name}.json", "wb") as f:
        f.write(json.dumps(man).encode())
