#!/usr/bin/env python3
"""Structural checks of the container files and Kubernetes manifests that the generic
linters (hadolint, kubernetes-validate) cannot make: how the pieces fit together.

Usage: check.py containers | kubernetes AGENT_BINARY
Exits 1 with one line per problem ("FILE: what is wrong; the fix"), 0 when all hold.
Needs PyYAML (kubernetes only) and Python 3.11 (tomllib).
"""

import os
import re
import shlex
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "packaging"
problems = []


def problem(where, text):
    problems.append(f"{where}: {text}")


# ---------------------------------------------------------------- containers


def instructions(path):
    """Containerfile instructions as (KEYWORD, argument text), continuations joined."""
    out, cur = [], ""
    for line in path.read_text().splitlines():
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + " "
            continue
        cur += line
        kw, _, rest = cur.strip().partition(" ")
        out.append((kw.upper(), rest.strip()))
        cur = ""
    return out


def max_locked_rust_version():
    """Highest `rust-version` among the locked crates found in cargo's registry cache."""
    lock = tomllib.loads((ROOT / "Cargo.lock").read_text())
    regs = list((Path.home() / ".cargo/registry/src").glob("*/"))
    best, who = (0, 0), None
    for pkg in lock["package"]:
        for reg in regs:
            manifest = reg / f"{pkg['name']}-{pkg['version']}" / "Cargo.toml"
            if manifest.exists():
                rv = tomllib.loads(manifest.read_text()).get("package", {}).get("rust-version")
                if isinstance(rv, str):
                    v = tuple(int(x) for x in rv.split(".")[:2])
                    if v > best:
                        best, who = v, f"{pkg['name']} {pkg['version']}"
                break
    return best, who


def check_containers():
    need_rust, who = max_locked_rust_version()
    for name in ("agent", "collector"):
        path = PKG / "container" / f"Containerfile.{name}"
        where = path.relative_to(ROOT)
        ins = instructions(path)
        stages = [i for i, (kw, _) in enumerate(ins) if kw == "FROM"]
        if len(stages) < 2:
            problem(where, "needs a build stage and a runtime stage (multi-stage)")
            continue
        stage_names = set()
        for i in stages:
            words = ins[i][1].split()
            image = words[0]
            if len(words) >= 3 and words[1].upper() == "AS":
                stage_names.add(words[2])
            if image in stage_names:
                continue
            tag = image.rsplit("/", 1)[-1]
            if "@sha256:" not in image and (":" not in tag or tag.endswith(":latest")):
                problem(where, f"base image '{image}' is not pinned; name a version tag")
            m = re.match(r".*/rust:(\d+)\.(\d+)", image)
            if m and (int(m[1]), int(m[2])) < need_rust:
                problem(where, f"builder '{image}' is older than Rust "
                        f"{need_rust[0]}.{need_rust[1]}, which {who} needs")
        final = ins[stages[-1]:]
        final_image = final[0][1].split()[0]
        if final_image.startswith("docker.io/library/rust") or "rust:" in final_image:
            problem(where, f"runtime stage runs on the toolchain image '{final_image}'")
        for kw, arg in ins:
            if kw == "ADD":
                problem(where, f"ADD '{arg}': use COPY (ADD fetches URLs and unpacks archives)")
            if kw == "COPY" and not arg.startswith("--from"):
                for src in shlex.split(arg)[:-1]:
                    if src != "." and not (ROOT / src).exists():
                        problem(where, f"COPY source '{src}' does not exist in the repository")
        users = [arg for kw, arg in final if kw == "USER"]
        if not users:
            problem(where, "runtime stage has no USER: it would run as root")
        else:
            uid = users[-1].split(":")[0]
            if not uid.isdigit() or int(uid) == 0:
                problem(where, f"USER '{users[-1]}': use a numeric non-root uid (65532)")
        binary = f"/usr/bin/inferwatt-{name}"
        if not any(kw == "COPY" and arg.startswith("--from") and arg.endswith(binary)
                   for kw, arg in final):
            problem(where, f"runtime stage does not COPY --from the build stage to '{binary}'")
        entry = [arg for kw, arg in final if kw == "ENTRYPOINT"]
        if not entry or binary not in entry[-1]:
            problem(where, f"ENTRYPOINT must run '{binary}'")
        if name == "collector":
            config = tomllib.loads((PKG / "kubernetes" / "collector.toml").read_text())
            port = config["listen"].rsplit(":", 1)[1]
            health = [arg for kw, arg in final if kw == "HEALTHCHECK"]
            if not health or "/healthz" not in health[0] or port not in health[0]:
                problem(where, f"HEALTHCHECK must ask /healthz on port {port}")
            if f"EXPOSE {port}" not in [f"{kw} {arg}" for kw, arg in final]:
                problem(where, f"EXPOSE {port} (the config's listen port) is missing")


# ---------------------------------------------------------------- kubernetes


def load_kustomization():
    import yaml

    kdir = PKG / "kubernetes"
    kust = yaml.safe_load((kdir / "kustomization.yaml").read_text())
    docs = []
    for res in kust["resources"]:
        for doc in yaml.safe_load_all((kdir / res).read_text()):
            if doc:
                docs.append((res, doc))
    generated = {}
    for kind, key in (("ConfigMap", "configMapGenerator"), ("Secret", "secretGenerator")):
        for gen in kust.get(key, []):
            files = {}
            for f in gen.get("files", []):
                k, _, p = f.partition("=") if "=" in f else (Path(f).name, "", f)
                if not (kdir / p).exists():
                    problem("kustomization.yaml", f"{key} '{gen['name']}' file '{p}' is missing")
                files[k] = kdir / p
            generated[(kind, gen["name"])] = files
    return kust, docs, generated


def container_port(container, port):
    for p in container.get("ports", []):
        if port in (p.get("name"), p.get("containerPort")):
            return p["containerPort"]
    return None


def check_workload(res, doc, docs, generated, agent_binary):
    where = f"{res} {doc['kind']}/{doc['metadata']['name']}"
    spec = doc["spec"]
    tmpl = spec["template"]
    labels = tmpl["metadata"].get("labels", {})
    for k, v in spec["selector"]["matchLabels"].items():
        if labels.get(k) != v:
            problem(where, f"selector {k}={v} does not match the pod template's labels")
    pod = tmpl["spec"]
    psc = pod.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True or psc.get("runAsUser", 0) == 0:
        problem(where, "pod securityContext must set runAsNonRoot: true and a non-zero runAsUser")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for v in volumes.values():
        ref = None
        if "configMap" in v:
            ref = ("ConfigMap", v["configMap"]["name"])
        elif "secret" in v:
            ref = ("Secret", v["secret"]["secretName"])
        if ref and ref not in generated:
            problem(where, f"volume '{v['name']}' uses {ref[0]} '{ref[1]}' that kustomization.yaml does not generate")
        if "persistentVolumeClaim" in v:
            claim = v["persistentVolumeClaim"]["claimName"]
            if not any(d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == claim
                       for _, d in docs):
                problem(where, f"volume '{v['name']}' claims PVC '{claim}' that no manifest defines")
    annotations = tmpl["metadata"].get("annotations", {})
    main = pod["containers"]
    for c in pod.get("initContainers", []) + main:
        cwhere = f"{where} container '{c['name']}'"
        image = c["image"]
        if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
            problem(cwhere, f"image '{image}' needs a version tag")
        sc = c.get("securityContext", {})
        if sc.get("allowPrivilegeEscalation") is not False:
            problem(cwhere, "set securityContext.allowPrivilegeEscalation: false")
        if sc.get("readOnlyRootFilesystem") is not True:
            problem(cwhere, "set securityContext.readOnlyRootFilesystem: true")
        caps = sc.get("capabilities", {})
        if caps.get("drop") != ["ALL"]:
            problem(cwhere, "drop all capabilities (capabilities.drop: [ALL])")
        added = caps.get("add", [])
        if c in main and added:
            problem(cwhere, f"the long-running container adds capabilities {added}")
        if sc.get("runAsUser") == 0 and (c in main or added != ["CHOWN"]):
            problem(cwhere, "runs as root: only an init container with CHOWN alone may")
        res_ = c.get("resources", {})
        if "memory" not in res_.get("requests", {}) or "memory" not in res_.get("limits", {}):
            problem(cwhere, "set resources.requests.memory and resources.limits.memory")
        if "nvidia.com/gpu" in str(res_):
            problem(cwhere, "must not request nvidia.com/gpu: it would take a GPU from the models")
        for m in c.get("volumeMounts", []):
            if m["name"] not in volumes:
                problem(cwhere, f"volumeMount '{m['name']}' has no volume")
        for probe in ("readinessProbe", "livenessProbe"):
            if c in main and probe not in c:
                problem(cwhere, f"has no {probe}")
            get = c.get(probe, {}).get("httpGet")
            if get:
                if get["path"] != "/healthz":
                    problem(cwhere, f"{probe} path '{get['path']}': the servers answer /healthz")
                if container_port(c, get["port"]) is None:
                    problem(cwhere, f"{probe} port '{get['port']}' is not a container port")
    c = main[0]
    if annotations.get("prometheus.io/scrape") == "true":
        port = int(annotations.get("prometheus.io/port", "0"))
        if container_port(c, port) is None:
            problem(where, f"prometheus.io/port '{port}' is not a container port")
    return pod, volumes, c


def mount_of(container, volume_name):
    return next((m["mountPath"] for m in container.get("volumeMounts", [])
                 if m["name"] == volume_name), None)


def check_kubernetes(agent_binary):
    kust, docs, generated = load_kustomization()
    kinds = {(d["kind"], d["metadata"]["name"]): (res, d) for res, d in docs}
    for (res, d) in docs:
        if d["kind"] != "Namespace" and d["metadata"].get("namespace") not in (None, kust.get("namespace")):
            problem(res, f"{d['kind']}/{d['metadata']['name']} is outside namespace '{kust.get('namespace')}'")
    workloads = [(res, d) for res, d in docs if d["kind"] in ("Deployment", "DaemonSet")]
    checked = {}
    for res, d in workloads:
        checked[d["metadata"]["name"]] = (res, d, *check_workload(res, d, docs, generated, agent_binary))
    for res, svc in docs:
        if svc["kind"] != "Service":
            continue
        where = f"{res} Service/{svc['metadata']['name']}"
        sel = svc["spec"]["selector"]
        targets = [d for _, d in workloads
                   if all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())]
        if not targets:
            problem(where, f"selector {sel} matches no workload's pods")
        for p in svc["spec"]["ports"]:
            for d in targets:
                if not any(container_port(c, p.get("targetPort", p["port"])) for c in d["spec"]["template"]["spec"]["containers"]):
                    problem(where, f"targetPort '{p.get('targetPort')}' is no container port of {d['metadata']['name']}")

    # The collector: its config's listen port is the container port, db on the PVC.
    if "inferwatt-collector" not in checked:
        problem("kubernetes", "no inferwatt-collector Deployment")
    else:
        res, d, pod, volumes, c = checked["inferwatt-collector"]
        where = f"{res} Deployment/inferwatt-collector"
        if d["kind"] != "Deployment" or d["spec"].get("strategy", {}).get("type") != "Recreate" or d["spec"].get("replicas") != 1:
            problem(where, "SQLite has one writer: one replica, strategy Recreate")
        cm = next(v["configMap"]["name"] for v in volumes.values() if "configMap" in v)
        cfg_path = generated[("ConfigMap", cm)]["collector.toml"]
        cfg = tomllib.loads(cfg_path.read_text())
        port = int(cfg["listen"].rsplit(":", 1)[1])
        if container_port(c, port) is None or not cfg["listen"].startswith("0.0.0.0"):
            problem(where, f"collector.toml listen '{cfg['listen']}' is not the container port on all interfaces")
        data = next(n for n, v in volumes.items() if "persistentVolumeClaim" in v)
        if not cfg["db_path"].startswith(mount_of(c, data) + "/"):
            problem(where, f"db_path '{cfg['db_path']}' is not on the PVC mount")
        args = c.get("args", [])
        conf_mount = mount_of(c, next(n for n, v in volumes.items() if "configMap" in v))
        if "--config" not in args or args[args.index("--config") + 1] != f"{conf_mount}/collector.toml":
            problem(where, f"args must pass --config {conf_mount}/collector.toml")

    # The agent: GPU access without a GPU request, host PIDs, its config assembled by
    # the init container (run here for real) and accepted by the agent binary.
    if "inferwatt-agent" not in checked:
        problem("kubernetes", "no inferwatt-agent DaemonSet")
        return
    res, d, pod, volumes, c = checked["inferwatt-agent"]
    where = f"{res} DaemonSet/inferwatt-agent"
    if d["kind"] != "DaemonSet":
        problem(where, "the agent runs once per GPU node: a DaemonSet")
    if pod.get("hostPID") is not True:
        problem(where, "hostPID: true is needed: NVML reports host PIDs")
    if not pod.get("nodeSelector") or not any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", [])):
        problem(where, "needs a GPU nodeSelector and a toleration for nvidia.com/gpu")
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    if env.get("NVIDIA_VISIBLE_DEVICES") != "all":
        problem(where, "set NVIDIA_VISIBLE_DEVICES=all so the runtime mounts every GPU")
    init = next((i for i in pod.get("initContainers", []) if i["name"] == "config"), None)
    if init is None:
        problem(where, "no 'config' init container assembling agent.toml")
        return
    with tempfile.TemporaryDirectory() as tmp:
        script = init["command"][-1]
        for vol in init["volumeMounts"]:
            v = volumes[vol["name"]]
            local = Path(tmp) / vol["name"]
            local.mkdir()
            ref = ("ConfigMap", v["configMap"]["name"]) if "configMap" in v else \
                ("Secret", v["secret"]["secretName"]) if "secret" in v else None
            for key, src in (generated.get(ref, {}) if ref else {}).items():
                (local / key).write_text(src.read_text())
            script = script.replace(vol["mountPath"], str(local))
        run = subprocess.run(["sh", "-c", script], env={**os.environ, "NODE_NAME": "gpu-node-7"},
                             capture_output=True, text=True)
        if run.returncode != 0:
            problem(where, f"init container script failed: {run.stderr.strip()}")
            return
        args = c["args"]
        conf = args[args.index("--config") + 1]
        run_mount = mount_of(c, "run")
        if not conf.startswith(run_mount + "/"):
            problem(where, f"--config '{conf}' is not in the init container's output volume")
            return
        out = Path(tmp) / "run" / Path(conf).relative_to(run_mount)
        cfg = tomllib.loads(out.read_text())
        if cfg["site"]["host"] != "gpu-node-7":
            problem(where, f"host tag is '{cfg['site']['host']}', not the node name")
        if "token" not in cfg.get("ship", {}) or "url" not in cfg.get("ship", {}):
            problem(where, "the assembled config has no [ship] url and token")
        elif ".svc:" not in cfg["ship"]["url"]:
            problem(where, f"ship url '{cfg['ship']['url']}' is not the collector Service")
        port = int(cfg["prometheus"]["listen"].rsplit(":", 1)[1])
        if container_port(c, port) is None or not cfg["prometheus"]["listen"].startswith("0.0.0.0"):
            problem(where, f"prometheus listen '{cfg['prometheus']['listen']}' is not the container port on all interfaces")
        if mount_of(c, "state") != cfg["state"]["dir"]:
            problem(where, f"[state] dir '{cfg['state']['dir']}' is not the state volume's mount")
        # Pods: the node's own, from the API server, by a service account that may only
        # read pods.
        pods_url = cfg.get("kubernetes", {}).get("pods_url", "")
        if "spec.nodeName%3Dgpu-node-7" not in pods_url:
            problem(where, f"[kubernetes] pods_url '{pods_url}' does not select this node's pods")
        sa = pod.get("serviceAccountName")
        if not sa or pod.get("automountServiceAccountToken") is not True:
            problem(where, "the agent needs its service account's token to read the node's pods")
        bound = [d["roleRef"]["name"] for _, d in docs if d["kind"] == "ClusterRoleBinding"
                 and any(s.get("kind") == "ServiceAccount" and s.get("name") == sa for s in d.get("subjects", []))]
        rules = [r for _, d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] in bound
                 for r in d.get("rules", [])]
        if not rules:
            problem(where, f"service account '{sa}' is bound to no ClusterRole that reads pods")
        for r in rules:
            if r.get("resources") != ["pods"] or sorted(r.get("verbs", [])) != ["get", "list"] \
                    or r.get("apiGroups") != [""]:
                problem(where, f"service account '{sa}' may do more than get/list pods: {r}")
        socket = cfg.get("kubernetes", {}).get("pod_resources_socket")
        if socket:
            mounts = [m for m in c.get("volumeMounts", [])
                      if socket.startswith(m["mountPath"].rstrip("/") + "/")]
            if not mounts:
                problem(where, f"pod_resources_socket '{socket}' is on no volume of the agent container")
            elif not all(m.get("readOnly") for m in mounts):
                problem(where, f"the volume holding '{socket}' must be mounted readOnly")
        # Exit 2 = the config is rejected; 3 = accepted, then NVML missing (as here).
        agent = subprocess.run([agent_binary, "check", "--config", str(out)], capture_output=True, text=True,
                               env={**os.environ, "INFERWATT_NVML_LIB": str(Path(tmp) / "no-libnvidia-ml.so.1")})
        if agent.returncode != 3:
            problem(where, f"the assembled agent.toml is rejected by the agent (exit {agent.returncode}): {agent.stderr.strip()}")


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "containers":
        check_containers()
    elif what == "kubernetes" and len(sys.argv) == 3:
        check_kubernetes(sys.argv[2])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for p in problems:
        print(p, file=sys.stderr)
    print(f"{what}: {'FAILED, ' + str(len(problems)) + ' problem(s)' if problems else 'ok'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
