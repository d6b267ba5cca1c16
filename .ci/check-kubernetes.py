"""The Kubernetes manifests, checked offline so that a mistake fails CI rather
than a deploy: every kustomization under kubernetes/ (the base and each
overlay) rendered with `kubectl kustomize`, as `kubectl apply -k` would; each
render validated strictly (unknown fields fail) against Kubernetes 1.32.0's
schemas by the pinned kubernetes-validate; then the rules this project keeps
that no schema knows: every pod non-root, RuntimeDefault seccomp, no
service-account token; every container without privilege escalation,
capabilities or a writable root filesystem; images tagged, never `latest`;
probes and Services on ports their containers declare; the ConfigMaps pods
read present in the render; the collector running the repository's
otel-collector.yaml from the path its --config reads, given every ${env:...}
it uses, and the services' OTLP endpoint reaching its gRPC receiver; orders-api
probed on the routes it serves, on the port it listens on; the decisions the
manifests explain (the HPA alone sets the API's replicas, exit 2 fails the
batch's Job at once).
What only a cluster proves (the images running read-only, volumes binding,
the HPA's metrics) is not checked here.

Run by .ci/run with the pinned tools: .ci/tools/.venv/bin/python .ci/check-kubernetes.py
The collector configuration's own rules (pipelines, components) are checked on
otel-collector.yaml by check-deployment.py; here only that Kubernetes runs it.
"""
import json
import pathlib
import re
import subprocess
import sys
import tempfile

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
# The collector release the tests build (collector/builder-config.yaml): the image to run.
RELEASE = yaml.safe_load((ROOT / "collector/builder-config.yaml").read_text())["dist"]["version"]
VALIDATE = pathlib.Path(sys.executable).parent / "kubernetes-validate"
PODS = {"Deployment": "spec.template.spec", "StatefulSet": "spec.template.spec", "DaemonSet": "spec.template.spec",
        "ReplicaSet": "spec.template.spec", "Job": "spec.template.spec",
        "CronJob": "spec.jobTemplate.spec.template.spec", "Pod": "spec"}
problems = []


def check(ok, problem):
    if not ok:
        problems.append(problem)


def dig(value, path):
    for key in path.split("."):
        value = (value or {}).get(key)
    return value


def rendered(kustomization):
    try:
        run = subprocess.run(["kubectl", "kustomize", str(kustomization)], capture_output=True, text=True)
    except FileNotFoundError:
        sys.exit("kubernetes: kubectl is missing: install kubectl 1.32 (kustomize is built in)")
    # kubectl's message, without its log prefix (E1202 07:09:12.430030 2889 run.go:72]).
    message = re.sub(r"^[EW]\d{4} \S+\s+\d+ \S+\] ", "", run.stderr.strip())
    check(run.returncode == 0, f"{kustomization.name}: kubectl kustomize failed: {message}")
    return run.stdout if run.returncode == 0 else None


def ports_of(container):
    return {p.get("name") for p in container.get("ports", [])} | {p["containerPort"] for p in container.get("ports", [])}


def env_names(container, by_name):
    """The variables a container gets that hold something: values, Secrets, and
    the keys of the ConfigMaps and Secrets its envFrom names, when rendered."""
    names = {e["name"] for e in container.get("env", []) if "value" in e or "valueFrom" in e}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef") or source.get("secretRef")
        kind = "ConfigMap" if "configMapRef" in source else "Secret"
        data = by_name.get((kind, ref["name"]), {})
        names |= {source.get("prefix", "") + key for key in {**data.get("data", {}), **data.get("stringData", {})}}
    return names


repository_collector = yaml.safe_load((ROOT / "otel-collector.yaml").read_text())
check(yaml.safe_load((ROOT / "kubernetes/base/otel-collector.yaml").read_text()) == repository_collector,
      "kubernetes/base/otel-collector.yaml is not otel-collector.yaml's configuration: copy it again (only comments may differ)")
# The routes orders-api serves, as its OpenAPI document lists them (a test holds docs/openapi.json equal to the
# router's), and LISTEN_ADDR's default in its config.rs.
routes = set(json.loads((ROOT / "docs/openapi.json").read_text())["paths"])
check({"/readyz", "/healthz"} <= routes, "docs/openapi.json (orders-api's routes) no longer lists /readyz and /healthz")
listen_default = re.search(r'env = "LISTEN_ADDR", default_value = "([^"]+)"', (ROOT / "crates/orders-api/src/config.rs").read_text())

renders = {k.parent.name: rendered(k.parent) for k in sorted(ROOT.glob("kubernetes/*/kustomization.yaml"))}
check("base" in renders, "kubernetes/base/kustomization.yaml is missing")
with tempfile.TemporaryDirectory() as tmp:
    files = []
    for name, text in renders.items():
        if text is not None:
            files.append(pathlib.Path(tmp, f"{name}.yaml"))
            files[-1].write_text(text)
    if files:
        run = subprocess.run([str(VALIDATE), "--strict", "--quiet", "-k", "1.32.0", *map(str, files)], capture_output=True, text=True)
        failures = [line.replace(f"{tmp}/", "") for line in (run.stdout + run.stderr).splitlines() if line.strip()]
        for failure in failures if run.returncode else []:
            problems.append(f"kubernetes-validate --strict -k 1.32.0: {failure}")
        check(run.returncode == 0 or failures, f"kubernetes-validate exited {run.returncode} and printed nothing")

summary = []
for render, text in renders.items():
    if text is None:
        continue
    objects = [o for o in yaml.safe_load_all(text) if o]
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    pods = []
    for o in objects:
        if o["kind"] in PODS:
            pods.append((f"{render}: {o['kind'].lower()}/{o['metadata']['name']}", dig(o, PODS[o["kind"]]), dig(o, PODS[o["kind"]].rsplit(".", 1)[0] + ".metadata.labels") or {}))
    for where, pod, _ in pods:
        security = pod.get("securityContext", {})
        check(security.get("runAsNonRoot") is True, f"{where}: securityContext.runAsNonRoot is not true")
        check(dig(security, "seccompProfile.type") == "RuntimeDefault", f"{where}: securityContext.seccompProfile.type is not RuntimeDefault")
        check(pod.get("automountServiceAccountToken") is False, f"{where}: automountServiceAccountToken is not false")
        for container in pod.get("initContainers", []) + pod.get("containers", []):
            at = f"{where}: container {container['name']}"
            context = container.get("securityContext", {})
            check(context.get("allowPrivilegeEscalation") is False, f"{at}: securityContext.allowPrivilegeEscalation is not false")
            check(context.get("readOnlyRootFilesystem") is True, f"{at}: securityContext.readOnlyRootFilesystem is not true")
            check("ALL" in (dig(context, "capabilities.drop") or []), f"{at}: securityContext.capabilities.drop lacks ALL")
            check(context.get("runAsNonRoot", True) is True and dig(context, "seccompProfile.type") in (None, "RuntimeDefault"),
                  f"{at}: securityContext undoes the pod's runAsNonRoot or seccompProfile")
            image = container.get("image", "")
            tag = image.split("@")[0].rsplit("/", 1)[-1].partition(":")[2]
            check(tag, f"{at}: image {image!r} has no tag (does a kustomization's images: name it?)")
            check(tag != "latest", f"{at}: image {image!r} is tagged latest: give it a release's tag")
            if image.startswith("otel/opentelemetry-collector-contrib:"):
                check(tag == RELEASE, f"{at}: image {image!r} is not the release collector/builder-config.yaml builds ({RELEASE})")
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                for handler in ("httpGet", "tcpSocket", "grpc"):
                    port = dig(container, f"{probe}.{handler}.port")
                    check(port is None or port in ports_of(container), f"{at}: {probe} probes port {port!r}, which the container does not declare")
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef")
                check(not ref or ref.get("optional") or ("ConfigMap", ref["name"]) in by_name, f"{at}: envFrom names ConfigMap {ref and ref['name']}, not in the render")
        for volume in pod.get("volumes", []):
            ref = volume.get("configMap")
            check(not ref or ref.get("optional") or ("ConfigMap", ref["name"]) in by_name, f"{where}: volume {volume['name']} names ConfigMap {ref and ref['name']}, not in the render")
    for o in objects:
        if o["kind"] == "Service":
            matching = [pod for _, pod, labels in pods if o["spec"].get("selector") and o["spec"]["selector"].items() <= labels.items()]
            check(matching, f"{render}: service/{o['metadata']['name']} selects no pod in the render")
            declared = {p for pod in matching for c in pod["containers"] for p in ports_of(c)}
            for port in o["spec"]["ports"]:
                target = port.get("targetPort", port["port"])
                check(not matching or target in declared, f"{render}: service/{o['metadata']['name']} targets port {target!r}, which its pods do not declare")

    # The collector: the repository's configuration, where --config reads it, with every ${env:...} it uses.
    collector = by_name.get(("Deployment", "otel-collector"))
    check(collector, f"{render}: no deployment/otel-collector")
    if collector:
        pod = dig(collector, "spec.template.spec")
        container = next((c for c in pod["containers"] if c["name"] == "otel-collector"), {})
        check(container, f"{render}: deployment/otel-collector has no container named otel-collector")
        arguments = " ".join(container.get("command", []) + container.get("args", []))
        config_path = re.search(r"--config[= ](\S+)", arguments)
        check(config_path, f"{render}: the collector container has no --config argument")
        mounted = None
        for mount in container.get("volumeMounts", []) if config_path else []:
            volume = next((v for v in pod.get("volumes", []) if v["name"] == mount["name"]), {})
            configmap = by_name.get(("ConfigMap", dig(volume, "configMap.name")))
            if not configmap:
                continue
            files = {i["path"]: i["key"] for i in volume["configMap"].get("items", [])} or {k: k for k in configmap.get("data", {})}
            for path, key in files.items():
                sub = mount.get("subPath")
                at = mount["mountPath"] if sub == path else None if sub else f"{mount['mountPath'].rstrip('/')}/{path}"
                if at == config_path[1]:
                    mounted = configmap["data"][key]
        check(not config_path or mounted, f"{render}: no ConfigMap in the render is mounted at {config_path and config_path[1]}, the collector's --config")
        if mounted:
            check(yaml.safe_load(mounted) == repository_collector, f"{render}: the collector's mounted configuration is not otel-collector.yaml's")
            missing = set(re.findall(r"\$\{env:(\w+)", mounted)) - env_names(container, by_name)
            check(not missing, f"{render}: the collector's configuration reads {sorted(missing)}, which its container is not given")

    api = by_name.get(("Deployment", "orders-api"))
    # The services export where the collector receives: gRPC, through its Service, to the receiver's port 4317.
    api_sources = [e["configMapRef"]["name"] for c in dig(api or {}, "spec.template.spec.containers") or [] for e in c.get("envFrom", []) if "configMapRef" in e]
    telemetry = {k: v for name in api_sources for k, v in (dig(by_name.get(("ConfigMap", name), {}), "data") or {}).items()}
    collector_service = by_name.get(("Service", "otel-collector"), {})
    grpc_target = next((p.get("targetPort") for p in dig(collector_service, "spec.ports") or []
                        if telemetry.get("OTEL_EXPORTER_OTLP_ENDPOINT") == f"http://otel-collector:{p['port']}"), None)
    receiver_port = collector and next((p["containerPort"] for c in dig(collector, "spec.template.spec.containers")
                                        for p in c.get("ports", []) if grpc_target in (p.get("name"), p["containerPort"])), None)
    check(telemetry.get("OTEL_EXPORTER_OTLP_PROTOCOL") == "grpc" and receiver_port == 4317,
          f"{render}: orders-telemetry's OTEL_EXPORTER_OTLP_ENDPOINT does not reach the collector's gRPC receiver (4317) through service/otel-collector")

    # The decisions the manifests' comments explain: the HPA alone sets the API's replicas; exit 2 fails the Job at once.
    hpa = by_name.get(("HorizontalPodAutoscaler", "orders-api"), {})
    check(dig(hpa, "spec.scaleTargetRef.name") == "orders-api" and (dig(hpa, "spec.minReplicas") or 0) >= 2,
          f"{render}: no HPA keeps orders-api at 2 replicas or more")
    check(not api or "replicas" not in api["spec"], f"{render}: deployment/orders-api sets replicas, which resets the HPA's count on every apply")
    batch_job = dig(by_name.get(("CronJob", "orders-batch"), {}), "spec.jobTemplate.spec") or {}
    fail_on_2 = any(r["action"] == "FailJob" and dig(r, "onExitCodes.values") == [2] for r in dig(batch_job, "podFailurePolicy.rules") or [])
    check(fail_on_2 and dig(batch_job, "template.spec.restartPolicy") == "Never",
          f"{render}: cronjob/orders-batch does not fail at once on exit 2 (a configuration error), with restartPolicy Never")

    # orders-api: probed on the routes its document lists (/readyz: the database answers; /healthz: the process serves), on LISTEN_ADDR's port.
    check(api, f"{render}: no deployment/orders-api")
    if api:
        container = next((c for c in dig(api, "spec.template.spec.containers") if c["name"] == "orders-api"), {})
        check(container, f"{render}: deployment/orders-api has no container named orders-api")
        check(dig(container, "readinessProbe.httpGet.path") == "/readyz", f"{render}: orders-api's readinessProbe is not GET /readyz")
        check(dig(container, "livenessProbe.httpGet.path") == "/healthz", f"{render}: orders-api's livenessProbe is not GET /healthz")
        check(dig(container, "startupProbe.httpGet.path") == "/healthz", f"{render}: orders-api's startupProbe is not GET /healthz")
        listen = next((e.get("value") for e in container.get("env", []) if e["name"] == "LISTEN_ADDR"), listen_default and listen_default[1])
        listen_port = int(str(listen).rsplit(":", 1)[-1])
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            port = dig(container, f"{probe}.httpGet.port")
            number = next((p["containerPort"] for p in container.get("ports", []) if port in (p.get("name"), p["containerPort"])), None)
            check(number == listen_port, f"{render}: orders-api's {probe} port {port!r} is {number}, not LISTEN_ADDR's {listen_port}")
    summary.append(f"{render} {len(objects)} objects, {len(pods)} pod specs")

for problem in problems:
    print(f"kubernetes: {problem}", file=sys.stderr)
if not problems:
    print(f"kubernetes: rendered, valid against 1.32.0 (strict), and the project's rules hold: {'; '.join(summary)}")
sys.exit(1 if problems else 0)
