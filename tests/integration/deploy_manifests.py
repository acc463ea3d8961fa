"""deploy_manifests.py - checks deploy/compose.yaml and deploy/kubernetes/*.yaml against what the
image and the documentation promise (used by test_deploy.sh).

Usage: python3 deploy_manifests.py DEPLOY_DIR IMAGE_INSPECT_JSON VERSION CONFIGMAP_OUT [CLUSTER_CONFIGMAP_OUT]

IMAGE_INSPECT_JSON is `buildah inspect --type image` of the built image: its Cmd, exposed port,
user, volume and HEALTHCHECK are what the files must agree with. VERSION is the project version
(CMakeLists.txt), the tag the Kubernetes manifest deploys. The ConfigMap's regslim.json is written
to CONFIGMAP_OUT so that the test can run `regslim check-config` on it inside the image; the
cluster's (deploy/kubernetes-cluster/: N replicas on S3 and Redis) to CLUSTER_CONFIGMAP_OUT.

Prints one line per check: `PASS<TAB>name` or `FAIL<TAB>name<TAB>why`; exits 0 (the caller counts).
"""

import glob
import json
import os
import re
import sys

import yaml

DATA_DIR = "/var/lib/regslim"
PORT = 5000
UID = 10001


def out(ok, name, why=""):
    if ok:
        print("PASS\t" + name)
    else:
        print("FAIL\t" + name + "\t" + str(why).replace("\n", " ")[:300])


def check(name, fn):
    """Run fn() -> (ok, why); an exception (a missing key, a wrong type) is a failure too."""
    try:
        ok, why = fn()
    except Exception as e:  # noqa: BLE001 - any malformed document is a failed check
        ok, why = False, "%s: %s" % (type(e).__name__, e)
    out(ok, name, why)


def size_bytes(s):
    """'18GiB', '20Gi', '4MiB', 1024 -> bytes."""
    if isinstance(s, int):
        return s
    m = re.fullmatch(r"(\d+)\s*([KMGT]?)(i?)B?", str(s).strip())
    if not m:
        raise ValueError("not a size: %r" % s)
    mult = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4}[m.group(2)]
    return int(m.group(1)) * ((1024 if m.group(3) or m.group(2) == "" else 1000) ** mult)


def repo_tag(image):
    name, _, tag = image.rpartition(":")
    if "/" in tag or not name:
        return image, "latest"
    return name, tag


def port_of(listen):
    return int(listen.rsplit(":", 1)[1])


def main():
    ddir, inspect_file, version, cm_out = sys.argv[1:5]
    with open(inspect_file) as f:
        img = json.load(f)
    cfg = img["OCIv1"]["config"]
    cmd = cfg.get("Cmd") or []
    health = ((img.get("Docker") or {}).get("config") or {}).get("Healthcheck") or {}
    # the configuration file the image's CMD reads
    conf_path = cmd[cmd.index("--config") + 1] if "--config" in cmd else None
    out(conf_path is not None, "image CMD names a --config file", "CMD %s" % cmd)
    conf_dir = os.path.dirname(conf_path or "/etc/regslim/regslim.json")

    # ------------------------------------------------------------ deploy/regslim.json
    with open(os.path.join(ddir, "regslim.json")) as f:
        shipped = json.load(f)
    check("regslim.json listens on 0.0.0.0:5000 with data in /var/lib/regslim",
          lambda: (shipped["listen"] == "0.0.0.0:%d" % PORT and shipped["data_dir"] == DATA_DIR,
                   "listen %s, data_dir %s" % (shipped.get("listen"), shipped.get("data_dir"))))
    grace = shipped.get("shutdown_grace_s", 30)

    # ------------------------------------------------------------ compose.yaml
    with open(os.path.join(ddir, "compose.yaml")) as f:
        comp = yaml.safe_load(f)
    svc = comp["services"]["regslim"]
    check("compose: image regslim, built from deploy/Dockerfile at the repository root",
          lambda: (repo_tag(svc["image"])[0] == "regslim" and svc["build"]["dockerfile"] == "deploy/Dockerfile"
                   and os.path.isfile(os.path.join(ddir, svc["build"]["context"], "CMakeLists.txt")),
                   "image %s, build %s" % (svc.get("image"), svc.get("build"))))
    check("compose: publishes container port 5000",
          lambda: (any(str(p).rsplit(":", 1)[-1].split("/")[0] == str(PORT) for p in svc["ports"]),
                   "ports %s" % svc.get("ports")))
    check("compose: runs as 10001:10001, read-only root, /tmp a tmpfs, no capabilities, no-new-privileges",
          lambda: (str(svc["user"]) == "%d:%d" % (UID, UID) and svc["read_only"] is True
                   and "/tmp" in svc["tmpfs"] and svc["cap_drop"] == ["ALL"]
                   and "no-new-privileges:true" in svc["security_opt"],
                   "user %s read_only %s tmpfs %s cap_drop %s security_opt %s"
                   % (svc.get("user"), svc.get("read_only"), svc.get("tmpfs"), svc.get("cap_drop"),
                      svc.get("security_opt"))))
    vols = [v if isinstance(v, str) else "%s:%s" % (v.get("source"), v.get("target")) for v in svc["volumes"]]
    split = [v.split(":") for v in vols]
    check("compose: a named volume (declared) holds /var/lib/regslim",
          lambda: (any(len(p) >= 2 and p[1] == DATA_DIR and p[0] in (comp.get("volumes") or {}) for p in split),
                   "volumes %s, declared %s" % (vols, list((comp.get("volumes") or {}).keys()))))
    check("compose: the configuration is mounted read-only where the image's CMD reads it",
          lambda: (any(len(p) >= 3 and p[1] == conf_path and "ro" in p[2].split(",")
                       and os.path.isfile(os.path.join(ddir, p[0])) for p in split),
                   "volumes %s, CMD reads %s" % (vols, conf_path)))
    check("compose: healthcheck is the image's HEALTHCHECK (GET /healthz)",
          lambda: (svc["healthcheck"]["test"] == health.get("Test") and "/healthz" in " ".join(health["Test"]),
                   "compose %s, image %s" % (svc["healthcheck"].get("test"), health.get("Test"))))
    check("compose: stop_grace_period longer than shutdown_grace_s",
          lambda: (int(str(svc["stop_grace_period"]).rstrip("s")) > grace,
                   "stop_grace_period %s, shutdown_grace_s %s" % (svc.get("stop_grace_period"), grace)))

    # ------------------------------------------------------------ kubernetes/*.yaml
    docs = []
    for fn in sorted(glob.glob(os.path.join(ddir, "kubernetes", "*.yaml"))):
        with open(fn) as f:
            docs += [d for d in yaml.safe_load_all(f) if d]
    kinds = {}
    for d in docs:
        kinds.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    out(set(kinds) >= {"Deployment", "Service", "ConfigMap", "PersistentVolumeClaim"},
        "kubernetes: Deployment, Service, ConfigMap and PersistentVolumeClaim present", "kinds %s" % sorted(kinds))
    dep = kinds["Deployment"]["regslim"]
    pod = dep["spec"]["template"]["spec"]
    ctr = pod["containers"][0]
    check("kubernetes: image regslim:<project version>",
          lambda: (repo_tag(ctr["image"]) == ("regslim", version), "image %s, version %s" % (ctr["image"], version)))
    check("kubernetes: args are the image's CMD (no command override)",
          lambda: (ctr.get("args") == cmd and "command" not in ctr, "args %s, CMD %s" % (ctr.get("args"), cmd)))
    named = {p["name"]: p["containerPort"] for p in ctr["ports"]}
    check("kubernetes: containerPort 5000",
          lambda: (PORT in named.values(), "ports %s" % ctr.get("ports")))

    def probe_ok(kind):
        def fn():
            p = ctr[kind]["httpGet"]
            port = named.get(p["port"], p["port"])
            return p["path"] == "/healthz" and port == PORT, "%s %s" % (kind, ctr.get(kind))
        return fn
    check("kubernetes: readinessProbe GET /healthz on 5000", probe_ok("readinessProbe"))
    check("kubernetes: livenessProbe GET /healthz on 5000", probe_ok("livenessProbe"))
    psc, csc = pod["securityContext"], ctr["securityContext"]
    check("kubernetes: pod runAsNonRoot, runAsUser/runAsGroup/fsGroup 10001",
          lambda: (psc["runAsNonRoot"] is True and psc["runAsUser"] == UID and psc["runAsGroup"] == UID
                   and psc["fsGroup"] == UID, "securityContext %s" % psc))
    check("kubernetes: container readOnlyRootFilesystem, no privilege escalation, capabilities dropped",
          lambda: (csc["readOnlyRootFilesystem"] is True and csc["allowPrivilegeEscalation"] is False
                   and csc["capabilities"]["drop"] == ["ALL"], "securityContext %s" % csc))
    mounts = {m["mountPath"]: m for m in ctr["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    check("kubernetes: /var/lib/regslim is a PersistentVolumeClaim the manifests create",
          lambda: (volumes[mounts[DATA_DIR]["name"]]["persistentVolumeClaim"]["claimName"]
                   in kinds["PersistentVolumeClaim"], "mount %s, volumes %s" % (mounts.get(DATA_DIR), volumes)))
    check("kubernetes: /tmp writable (emptyDir) under the read-only root",
          lambda: ("emptyDir" in volumes[mounts["/tmp"]["name"]], "mount %s" % mounts.get("/tmp")))

    cm_conf = {}

    def cm_ok():
        v = volumes[mounts[conf_dir]["name"]]
        cm = kinds["ConfigMap"][v["configMap"]["name"]]
        key = os.path.basename(conf_path)
        items = v["configMap"].get("items")
        if items:  # an explicit key -> path mapping
            key = next(i["key"] for i in items if i["path"] == os.path.basename(conf_path))
        cm_conf.update(json.loads(cm["data"][key]))
        with open(cm_out, "w") as f:
            f.write(cm["data"][key])
        return mounts[conf_dir].get("readOnly") is True, "mount %s" % mounts[conf_dir]
    check("kubernetes: ConfigMap mounted read-only where the image's CMD reads its configuration", cm_ok)
    check("kubernetes: the ConfigMap's configuration listens on 0.0.0.0:5000, data in /var/lib/regslim",
          lambda: (cm_conf["listen"] == "0.0.0.0:%d" % PORT and cm_conf["data_dir"] == DATA_DIR,
                   "listen %s, data_dir %s" % (cm_conf.get("listen"), cm_conf.get("data_dir"))))

    def cache_fits():
        pvc = kinds["PersistentVolumeClaim"][volumes[mounts[DATA_DIR]["name"]]["persistentVolumeClaim"]["claimName"]]
        want = size_bytes(pvc["spec"]["resources"]["requests"]["storage"])
        have = size_bytes(cm_conf["cache"]["max_bytes"])
        return have < want, "cache.max_bytes %s, PVC %s" % (have, want)
    check("kubernetes: cache.max_bytes below the PersistentVolumeClaim's size", cache_fits)
    check("kubernetes: terminationGracePeriodSeconds longer than shutdown_grace_s",
          lambda: (pod["terminationGracePeriodSeconds"] > cm_conf.get("shutdown_grace_s", 30),
                   "%s vs %s" % (pod.get("terminationGracePeriodSeconds"), cm_conf.get("shutdown_grace_s"))))
    svc_k = kinds["Service"]["regslim"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    check("kubernetes: Service port 5000 to the pod's port, selector matches the pod",
          lambda: (any(p["port"] == PORT and named.get(p["targetPort"], p["targetPort"]) == PORT
                       for p in svc_k["spec"]["ports"])
                   and all(labels.get(k) == v for k, v in svc_k["spec"]["selector"].items()),
                   "service %s, pod labels %s" % (svc_k["spec"], labels)))

    # ------------------------------------------------------------ the image itself
    check("image: user 10001:10001, port 5000/tcp, volume /var/lib/regslim",
          lambda: (cfg["User"] == "%d:%d" % (UID, UID) and "%d/tcp" % PORT in cfg["ExposedPorts"]
                   and DATA_DIR in cfg["Volumes"], "User %s ExposedPorts %s Volumes %s"
                   % (cfg.get("User"), cfg.get("ExposedPorts"), cfg.get("Volumes"))))

    if len(sys.argv) > 5:
        cluster_checks(ddir, cmd, conf_path, version, sys.argv[5])


def load_kinds(d):
    kinds = {}
    for fn in sorted(glob.glob(os.path.join(d, "*.yaml"))):
        with open(fn) as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    kinds.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    return kinds


def cluster_checks(ddir, cmd, conf_path, version, cm_out):
    """deploy/kubernetes-cluster/: N replicas on the s3 store and Redis, what docs/scale-out.md says."""
    kinds = load_kinds(os.path.join(ddir, "kubernetes-cluster"))
    out(set(kinds) >= {"Deployment", "Service", "ConfigMap", "Secret"},
        "cluster: Deployment, Service, ConfigMap and Secret present", "kinds %s" % sorted(kinds))
    dep = kinds["Deployment"]["regslim"]
    pod = dep["spec"]["template"]["spec"]
    ctr = pod["containers"][0]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    check("cluster: several replicas of regslim:<project version>, args the image's CMD",
          lambda: (dep["spec"]["replicas"] >= 2 and repo_tag(ctr["image"]) == ("regslim", version)
                   and ctr.get("args") == cmd, "replicas %s image %s args %s" % (dep["spec"].get("replicas"),
                                                                                 ctr.get("image"), ctr.get("args"))))
    mounts = {m["mountPath"]: m for m in ctr["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    conf = {}

    def conf_ok():
        v = volumes[mounts[os.path.dirname(conf_path)]["name"]]
        cm = kinds["ConfigMap"][v["configMap"]["name"]]
        text = cm["data"][os.path.basename(conf_path)]
        conf.update(json.loads(text))
        with open(cm_out, "w") as f:
            f.write(text)
        return mounts[os.path.dirname(conf_path)].get("readOnly") is True, "mount %s" % mounts[os.path.dirname(conf_path)]
    check("cluster: ConfigMap mounted read-only where the image's CMD reads its configuration", conf_ok)
    check("cluster: the configuration uses the s3 store and a cluster section with Redis",
          lambda: (conf["store"]["driver"] == "s3" and conf["cluster"]["redis"].startswith("redis://"),
                   "store %s cluster %s" % (conf.get("store"), conf.get("cluster"))))
    env = {e["name"]: e for e in ctr.get("env", [])}

    def secret_env(var):
        ref = env[var]["valueFrom"]["secretKeyRef"]
        return ref["key"] in (kinds["Secret"][ref["name"]].get("stringData") or kinds["Secret"][ref["name"]]["data"])
    check("cluster: the S3 keys come from a Secret the manifests create, through the variables the configuration names",
          lambda: (secret_env(conf["store"]["s3"]["access_key_env"]) and secret_env(conf["store"]["s3"]["secret_key_env"]),
                   "env %s" % sorted(env)))

    def peer_ok():
        path = conf["cluster"]["peer_secret_file"]
        m = mounts[os.path.dirname(path)]
        sec = volumes[m["name"]]["secret"]
        data = kinds["Secret"][sec["secretName"]].get("stringData") or kinds["Secret"][sec["secretName"]]["data"]
        return os.path.basename(path) in data and m.get("readOnly") is True, "mount %s secret %s" % (m, sec)
    check("cluster: the peer secret is a file of a Secret mounted read-only", peer_ok)
    check("cluster: each replica advertises its own pod address (advertise_url_env from status.podIP)",
          lambda: ("$(POD_IP)" in env[conf["cluster"]["advertise_url_env"]]["value"]
                   and env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP",
                   "cluster %s env %s" % (conf.get("cluster"), sorted(env))))
    check("cluster: data_dir is scratch (an emptyDir), not a PersistentVolumeClaim",
          lambda: ("emptyDir" in volumes[mounts[conf["data_dir"]]["name"]], "volume %s" % volumes.get(
              mounts.get(conf.get("data_dir"), {}).get("name"))))

    def probe(kind):
        p = ctr[kind]["httpGet"]
        return p["path"] == "/healthz", "%s %s" % (kind, ctr.get(kind))
    check("cluster: readiness and liveness probes on /healthz",
          lambda: (probe("readinessProbe")[0] and probe("livenessProbe")[0], ctr.get("readinessProbe")))
    csc = ctr["securityContext"]
    check("cluster: non-root, read-only root filesystem, no capabilities",
          lambda: (pod["securityContext"]["runAsUser"] == UID and csc["readOnlyRootFilesystem"] is True
                   and csc["capabilities"]["drop"] == ["ALL"], "%s %s" % (pod.get("securityContext"), csc)))
    svc = kinds["Service"]["regslim"]
    check("cluster: Service port 5000 selects the replicas",
          lambda: (any(p["port"] == PORT for p in svc["spec"]["ports"])
                   and all(labels.get(k) == v for k, v in svc["spec"]["selector"].items()), "service %s" % svc["spec"]))

    def redis_ok():
        host = conf["cluster"]["redis"][len("redis://"):].split("/")[0].split(":")[0]
        rsvc = kinds["Service"][host]
        rdep = next(d for d in kinds["Deployment"].values()
                    if all(d["spec"]["template"]["metadata"]["labels"].get(k) == v
                           for k, v in rsvc["spec"]["selector"].items()))
        return rdep["spec"]["replicas"] == 1, "redis service %s deployment %s" % (host, rdep["metadata"]["name"])
    check("cluster: the Redis the configuration names is a Service of the manifests, backed by a Deployment", redis_ok)


if __name__ == "__main__":
    main()
