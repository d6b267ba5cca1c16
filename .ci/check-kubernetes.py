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
batch's Job at once). And what production needs: each service's pods named
on its telemetry (service.instance.id from the pod's UID); probes with
explicit timeouts, readiness outwaiting /readyz's own and riding out a blip;
the API's replicas spread by node and zone, drained one at a time; the
collector in two replicas or more, each with its own queue volume, spread,
rolled and drained one at a time; upgrades named in one place, and every
overlay docs/kubernetes.md shows (planted mutations prove these checks fail
when they should: one replica, a shared claim, no budget, OnDelete, the
Job's image left behind, the egress patch missing); the collector's GOMEMLIMIT, memory and own metrics; a ServiceAccount per
workload; the app.kubernetes.io labels on every object and pod template;
NetworkPolicies denying by default and letting through exactly the traffic
the system needs (network_policy.py reads them).
Every overlay docs/kubernetes.md shows is rendered and checked too, as pasted.
What only a cluster proves (the images running read-only, volumes binding,
the HPA's metrics, a CNI enforcing the policies) is not checked here.

Run by .ci/run with the pinned tools: .ci/tools/.venv/bin/python .ci/check-kubernetes.py
The collector configuration's own rules (pipelines, components) are checked on
otel-collector.yaml by check-deployment.py; here only that Kubernetes runs it.
"""
import copy
import json
import pathlib
import shutil
import re
import subprocess
import sys
import tempfile

import yaml

from network_policy import Pod, admits, selects

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


BYTES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}


def quantity(text):
    """Bytes in a Kubernetes quantity (512Mi) or a GOMEMLIMIT (410MiB)."""
    number, unit = re.fullmatch(r"(\d+)([KMG]iB?)?", str(text)).groups()
    return int(number) * BYTES.get(unit, 1)


def env_value(container, name, default=None):
    return next((e.get("value") for e in container.get("env", []) if e["name"] == name), default)


# What tells replicas apart on every signal, from the Downward API.
IDENTITY = {"service.instance.id": "metadata.uid", "k8s.pod.name": "metadata.name", "k8s.namespace.name": "metadata.namespace",
            "k8s.node.name": "spec.nodeName"}
# The semantic conventions' attribute naming each kind of workload.
WORKLOAD_ATTRIBUTE = {"Deployment": "k8s.deployment.name", "CronJob": "k8s.cronjob.name", "Job": "k8s.job.name",
                      "StatefulSet": "k8s.statefulset.name"}


def check_identity(where, kind, container, telemetry):
    """OTEL_RESOURCE_ATTRIBUTES names the pod, its node and its workload
    (from the pod template's app.kubernetes.io/name), from variables set
    before it, and keeps what orders-telemetry's says, deployment.environment
    (which SigNoz reads) beside deployment.environment.name."""
    env = container.get("env", [])
    position = next((i for i, e in enumerate(env) if e["name"] == "OTEL_RESOURCE_ATTRIBUTES"), len(env))
    earlier = {e["name"]: dig(e, "valueFrom.fieldRef.fieldPath") for e in env[:position]}
    value = env_value(container, "OTEL_RESOURCE_ATTRIBUTES", "")
    attributes = dict(pair.split("=", 1) for pair in value.split(",") if "=" in pair)
    for attribute, field in IDENTITY.items():
        variable = re.fullmatch(r"\$\((\w+)\)", attributes.get(attribute, ""))
        check(variable and earlier.get(variable[1]) == field,
              f"{where}: OTEL_RESOURCE_ATTRIBUTES does not set {attribute} from the pod's {field} (a fieldRef variable before it)")
    workload = re.fullmatch(r"\$\((\w+)\)", attributes.get(WORKLOAD_ATTRIBUTE.get(kind, ""), ""))
    check(workload and earlier.get(workload[1]) == "metadata.labels['app.kubernetes.io/name']",
          f"{where}: OTEL_RESOURCE_ATTRIBUTES does not set {WORKLOAD_ATTRIBUTE.get(kind)} from the pod template's app.kubernetes.io/name")
    shared = dict(pair.split("=", 1) for pair in telemetry.get("OTEL_RESOURCE_ATTRIBUTES", "").split(",") if "=" in pair)
    check(shared.get("deployment.environment") == shared.get("deployment.environment.name") is not None,
          f"{where}: orders-telemetry's OTEL_RESOURCE_ATTRIBUTES lacks deployment.environment beside deployment.environment.name")
    check("OTEL_RESOURCE_ATTRIBUTES" not in telemetry or value.startswith("$(OTEL_RESOURCE_ATTRIBUTES),"),
          f"{where}: OTEL_RESOURCE_ATTRIBUTES replaces orders-telemetry's ({telemetry.get('OTEL_RESOURCE_ATTRIBUTES')}) instead of adding to it")


def check_probes(where, container):
    """Readiness that outwaits the API's own ping and rides out a blip of 10 s
    (a pod leaves after failureThreshold failures, periodSeconds apart);
    liveness off the database."""
    ready = container.get("readinessProbe", {})
    ping_ms = int(env_value(container, "READYZ_TIMEOUT_MS", readyz_default and readyz_default[1]) or 0)
    check(ping_ms and ready.get("timeoutSeconds", 1) * 1000 > ping_ms,
          f"{where}: readinessProbe's timeoutSeconds is not longer than READYZ_TIMEOUT_MS ({ping_ms} ms), /readyz's own")
    threshold = ready.get("failureThreshold", 3)
    check(threshold >= 2 and (threshold - 1) * ready.get("periodSeconds", 10) >= 10,
          f"{where}: readinessProbe takes the pod out of the Service within 10 s of its first failure: a database blip empties it")
    check(dig(container, "livenessProbe.httpGet.path") != "/readyz", f"{where}: livenessProbe asks /readyz: a database outage would restart every pod")


def check_replicas_spread(render, workload, pdbs):
    """Spread by node and zone; a drain takes one replica at a time and may
    evict a pod that is not ready."""
    name = f"{workload['kind'].lower()}/{workload['metadata']['name']}"
    labels = dig(workload, "spec.template.metadata.labels") or {}
    keys = {c["topologyKey"] for c in dig(workload, "spec.template.spec.topologySpreadConstraints") or [] if selects(c.get("labelSelector"), labels)}
    for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone"):
        check(key in keys, f"{render}: {name} does not spread its pods by {key}")
    budgets = [b for b in pdbs if selects(b["spec"].get("selector"), labels)]
    check(len(budgets) == 1 and budgets[0]["spec"].get("maxUnavailable") == 1 and "minAvailable" not in budgets[0]["spec"]
          and budgets[0]["spec"].get("unhealthyPodEvictionPolicy") == "AlwaysAllow",
          f"{render}: {name}'s pods have no PodDisruptionBudget of maxUnavailable 1 with unhealthyPodEvictionPolicy AlwaysAllow")


def check_collector_available(render, objects):
    """No single point of failure: a StatefulSet of two replicas or more,
    each with a queue volume of its own from volumeClaimTemplates (no claim
    shared by its pods, which only one could mount), rolled one at a time,
    spread and drained one at a time."""
    collector = next((o for o in objects if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "otel-collector"), None)
    check(collector, f"{render}: no statefulset/otel-collector")
    if not collector:
        return
    check((dig(collector, "spec.replicas") or 1) >= 2, f"{render}: statefulset/otel-collector has fewer than 2 replicas")
    templates = {dig(t, "metadata.name") for t in dig(collector, "spec.volumeClaimTemplates") or []}
    mounts = {m["name"] for c in dig(collector, "spec.template.spec.containers") for m in c.get("volumeMounts", [])}
    shared = [v["name"] for v in dig(collector, "spec.template.spec.volumes") or [] if "persistentVolumeClaim" in v]
    check("queue" in templates & mounts and not shared,
          f"{render}: the collector's queue is not a volume of each replica's own (volumeClaimTemplates), or its pods share a claim ({shared})")
    strategy = dig(collector, "spec.updateStrategy.type") or "RollingUpdate"
    check(strategy == "RollingUpdate" and (dig(collector, "spec.updateStrategy.rollingUpdate.maxUnavailable") or 1) == 1
          and (dig(collector, "spec.minReadySeconds") or 0) > 0,
          f"{render}: statefulset/otel-collector is not rolled one ready replica at a time")
    check_replicas_spread(render, collector, [o for o in objects if o["kind"] == "PodDisruptionBudget"])
    # Its own metrics found by the scrapers that read pod annotations, at the port its metrics reader serves.
    annotations = dig(collector, "spec.template.metadata.annotations") or {}
    port = str(dig(yaml.safe_load((ROOT / "otel-collector.yaml").read_text()), "service.telemetry.metrics.readers")[0]["pull"]["exporter"]["prometheus"]["port"])
    for prefix in ("signoz.io", "prometheus.io"):
        check([annotations.get(f"{prefix}/{key}") for key in ("scrape", "port", "path")] == ["true", port, "/metrics"],
              f"{render}: the collector's pods lack the {prefix}/scrape, /port ({port}) and /path annotations a scraper reads")


def collector_mutations_fail(objects):
    """Plants each mutation in a copy of the base's objects: the collector's
    check must find a problem in every one."""
    def one_replica(objects):
        collector(objects)["spec"]["replicas"] = 1

    def shared_volume(objects):
        spec = collector(objects)["spec"]
        del spec["volumeClaimTemplates"]
        spec["template"]["spec"]["volumes"].append({"name": "queue", "persistentVolumeClaim": {"claimName": "otel-collector-queue"}})

    def no_budget(objects):
        objects[:] = [o for o in objects if not (o["kind"] == "PodDisruptionBudget" and o["metadata"]["name"] == "otel-collector")]

    def recreated(objects):
        collector(objects)["spec"]["updateStrategy"] = {"type": "OnDelete"}

    def collector(objects):
        return next(o for o in objects if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "otel-collector")

    for mutation in (one_replica, shared_volume, no_budget, recreated):
        planted = copy.deepcopy(objects)
        mutation(planted)
        catches(mutation.__name__, lambda: check_collector_available(f"base with {mutation.__name__}", planted))


def catches(mutation, run):
    """`run` checks a copy with `mutation` planted: it must report a problem,
    which is then forgotten."""
    before = len(problems)
    run()
    found = len(problems) > before
    del problems[before:]
    check(found, f"the checks pass with the mutation {mutation} planted")


def check_collector_memory(render, container, configuration):
    """GOMEMLIMIT a little under the memory limit, the request equal to it,
    its own metrics on a declared port, on every interface."""
    limit = dig(container, "resources.limits.memory")
    gomemlimit = env_value(container, "GOMEMLIMIT")
    check(limit and gomemlimit and 0.7 <= quantity(gomemlimit) / quantity(limit) <= 0.9,
          f"{render}: the collector's GOMEMLIMIT ({gomemlimit}) is not about 80 % of its memory limit ({limit})")
    check(limit and dig(container, "resources.requests.memory") == limit, f"{render}: the collector's memory request is not its limit ({limit})")
    readers = dig(configuration, "service.telemetry.metrics.readers") or []
    exposed = [dig(r, "pull.exporter.prometheus") for r in readers if dig(r, "pull.exporter.prometheus.host") == "0.0.0.0"]
    check(any(e.get("port") in ports_of(container) for e in exposed),
          f"{render}: the collector's own metrics are not served on 0.0.0.0 at a port its container declares")


def check_accounts_and_labels(render, objects, pods):
    """A ServiceAccount of its own per workload, without a token; the
    app.kubernetes.io labels on every object and pod template."""
    accounts = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ServiceAccount"}
    used = [pod.get("serviceAccountName") for _, pod, _ in pods]
    for where, pod, labels in pods:
        account = accounts.get(pod.get("serviceAccountName"))
        check(account and used.count(pod["serviceAccountName"]) == 1 and account.get("automountServiceAccountToken") is False,
              f"{where}: no ServiceAccount of its own in the render (serviceAccountName), with automountServiceAccountToken false")
        check({"app.kubernetes.io/name", "app.kubernetes.io/part-of"} <= labels.keys(), f"{where}: its pod template lacks app.kubernetes.io/name or part-of")
    named = {"Deployment", "StatefulSet", "CronJob", "Service", "ServiceAccount", "PodDisruptionBudget", "HorizontalPodAutoscaler", "PersistentVolumeClaim"}
    for o in objects:
        labels = o["metadata"].get("labels") or {}
        wanted = {"app.kubernetes.io/part-of"} | ({"app.kubernetes.io/name"} if o["kind"] in named else set())
        check(wanted <= labels.keys(), f"{render}: {o['kind'].lower()}/{o['metadata']['name']} lacks the label(s) {sorted(wanted - labels.keys())}")


def check_migrations(render, by_name):
    """Who migrates: the services (the default), or a Job running the API's
    image with `--migrate-only` as a role of its own while both services
    require the migrations (and wait for them)."""
    containers = {name: (dig(by_name.get((kind, name)), path) or {}).get("containers", [{}])[0]
                  for kind, name, path in (("Deployment", "orders-api", "spec.template.spec"),
                                           ("CronJob", "orders-batch", "spec.jobTemplate.spec.template.spec"),
                                           ("Job", "orders-migrate", "spec.template.spec"))}
    job = containers["orders-migrate"]
    for service in ("orders-api", "orders-batch"):
        required = env_value(containers[service], "DATABASE_MIGRATIONS") == "require"
        check(required == bool(job), f"{render}: {service} {'waits for' if required else 'applies'} the migrations, "
                                     f"{'and' if job else 'but'} {'a' if job else 'no'} Job orders-migrate applies them")
    if job:
        check(job.get("args") == ["--migrate-only"] and job.get("image") == containers["orders-api"].get("image"),
              f"{render}: job/orders-migrate does not run orders-api's image ({containers['orders-api'].get('image')}) with --migrate-only")
        secret = lambda c: next((dig(e, "valueFrom.secretKeyRef.name") for e in c.get("env", []) if e["name"] == "DATABASE_URL"), None)
        check(secret(job) and secret(job) != secret(containers["orders-api"]),
              f"{render}: job/orders-migrate does not connect with a Secret of its own (the role that owns the schema)")


def check_network(render, objects, settings):
    """Deny by default; allow exactly what the system needs, and nothing else
    that is tried here."""
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    for policy in policies:
        rules = [r for key in ("ingress", "egress") for r in policy["spec"].get(key) or []]
        unread = [r for r in rules if any("ipBlock" in peer for peer in r.get("from", []) + r.get("to", []))
                  or any("endPort" in port for port in r.get("ports", []))]
        check(not unread, f"{render}: networkpolicy/{policy['metadata']['name']} uses ipBlock or endPort, which network_policy.py does not read")
    check(any(p["spec"]["podSelector"] == {} and not p["spec"].get("ingress") and not p["spec"].get("egress")
              and {"Ingress", "Egress"} <= set(p["spec"].get("policyTypes", [])) for p in policies),
          f"{render}: no NetworkPolicy denies all ingress and egress in the namespace by default")
    namespace = next(o["metadata"]["namespace"] for o in objects if o["kind"] == "Deployment")
    pods = {}
    for o in objects:
        if o["kind"] in PODS:
            template = dig(o, PODS[o["kind"]].rsplit(".", 1)[0])
            ports = {p["name"]: p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", []) if "name" in p}
            pods[o["metadata"]["name"]] = Pod(namespace, template["metadata"].get("labels", {}), ports)
    outside, elsewhere = Pod(None), Pod("another-namespace", {"app": "anything"})
    dns = Pod("kube-system", {"k8s-app": "kube-dns"})
    database = pods.get("postgres", outside)
    signoz_host, _, signoz_port = settings.get("SIGNOZ_OTLP_ENDPOINT", "").rpartition(":")
    signoz_namespace = re.fullmatch(r"[^.]+\.([^.]+)\.svc(\.cluster\.local)?", signoz_host)
    signoz = Pod(signoz_namespace[1], {"app.kubernetes.io/component": "otel-collector"}) if signoz_namespace else outside
    api, batch, collector = pods.get("orders-api"), pods.get("orders-batch"), pods.get("otel-collector")
    if not (api and batch and collector):
        return
    needed = [("a client", outside, "orders-api", api, 3000), ("orders-api", api, "the collector", collector, 4317),
              ("orders-batch", batch, "the collector", collector, 4317), ("orders-api", api, "PostgreSQL", database, 5432),
              ("orders-batch", batch, "PostgreSQL", database, 5432),
              ("the collector", collector, f"SigNoz ({settings.get('SIGNOZ_OTLP_ENDPOINT')})", signoz, int(signoz_port or 0)),
              ("a Prometheus in another namespace", elsewhere, "the collector's metrics", collector, 8888)]
    needed += [(name, pod, "the cluster's DNS", dns, 53) for name, pod in pods.items()]
    if "orders-migrate" in pods:
        needed += [("orders-migrate", pods["orders-migrate"], "PostgreSQL", database, 5432),
                   ("orders-migrate", pods["orders-migrate"], "the collector", collector, 4317)]
    refused = [("a pod of another namespace", elsewhere, "the collector", collector, 4317),
               ("a pod of another namespace", elsewhere, "PostgreSQL", database, 5432),
               ("orders-api", api, "an address outside", outside, 443), ("orders-batch", batch, "orders-api", api, 3000)]
    for source_name, source, destination_name, destination, port in needed:
        protocols = ("UDP", "TCP") if port == 53 else ("TCP",)
        check(all(admits(policies, source, destination, port, p) for p in protocols),
              f"{render}: the NetworkPolicies stop {source_name} reaching {destination_name} on {port}")
    for source_name, source, destination_name, destination, port in refused:
        ours = namespace in (source.namespace, destination.namespace)
        check(not ours or not admits(policies, source, destination, port), f"{render}: the NetworkPolicies let {source_name} reach {destination_name} on {port}")


repository_collector = yaml.safe_load((ROOT / "otel-collector.yaml").read_text())
check(yaml.safe_load((ROOT / "kubernetes/base/otel-collector.yaml").read_text()) == repository_collector,
      "kubernetes/base/otel-collector.yaml is not otel-collector.yaml's configuration: copy it again (only comments may differ)")
# The routes orders-api serves, as its OpenAPI document lists them (a test holds docs/openapi.json equal to the
# router's), and LISTEN_ADDR's default in its config.rs.
routes = set(json.loads((ROOT / "docs/openapi.json").read_text())["paths"])
check({"/readyz", "/healthz"} <= routes, "docs/openapi.json (orders-api's routes) no longer lists /readyz and /healthz")
readyz_default = re.search(r'env = "READYZ_TIMEOUT_MS", default_value_t = (\d+)', (ROOT / "crates/orders-api/src/config.rs").read_text())
listen_default = re.search(r'env = "LISTEN_ADDR", default_value = "([^"]+)"', (ROOT / "crates/orders-api/src/config.rs").read_text())

renders = {k.parent.name: rendered(k.parent) for k in sorted(ROOT.glob("kubernetes/*/kustomization.yaml"))}
check("base" in renders, "kubernetes/base/kustomization.yaml is missing")
def pasted_beside_the_others(name, kustomization):
    """`kustomization` rendered from a folder of its own beside kubernetes/base."""
    pasted = pathlib.Path(tempfile.mkdtemp(prefix=f".{name}-", dir=ROOT / "kubernetes"))
    try:
        (pasted / "kustomization.yaml").write_text(kustomization)
        return rendered(pasted)
    finally:
        shutil.rmtree(pasted)


# Every overlay docs/kubernetes.md shows, as a user pastes it beside the others.
docs_overlays = {}
for number, block in enumerate(b for b in re.findall(r"```yaml\n(.*?)```", (ROOT / "docs/kubernetes.md").read_text(), re.S)
                               if "kind: Kustomization" in b):
    named = re.match(r"# kubernetes/([\w-]+)/kustomization\.yaml\n", block)
    docs_overlays[f"docs-{named[1] if named else number}"] = block
renders.update({name: pasted_beside_the_others(name, block) for name, block in docs_overlays.items()})
check(len(docs_overlays) >= 2 and "docs-my-cluster" in docs_overlays, "docs/kubernetes.md shows fewer than the two overlays it should")


def images_after_a_tag_bump(overlay, tag, digest, alter=lambda copied: None):
    """Each workload's images in `overlay`, rendered from a copy of kubernetes/
    whose base names every image at `tag`, pinned by `digest` (and `alter`
    changed): an upgrade as docs/kubernetes.md makes it, in one place."""
    with tempfile.TemporaryDirectory() as copy_root:
        copied = pathlib.Path(copy_root, "kubernetes")
        shutil.copytree(ROOT / "kubernetes", copied)
        alter(copied)
        base = copied / "base/kustomization.yaml"
        bumped = re.sub(r'( *)newTag: "[^"]*"', rf'\1newTag: "{tag}"\n\1digest: {digest}', base.read_text())
        base.write_text(bumped)
        text = rendered(copied / overlay) or ""
    return {f"{o['kind']}/{o['metadata']['name']}": [c["image"] for c in dig(o, PODS[o["kind"]])["containers"]]
            for o in yaml.safe_load_all(text) if o and o["kind"] in PODS}


# An upgrade, pinned by digest as docs/kubernetes.md shows: name:tag@sha256:…, whose tag the rules above read.
DIGEST = "sha256:" + "5" * 64


def check_upgrade_in_one_place(overlay, workloads, alter=lambda copied: None):
    ours = {workload: [image for image in images if "/orders-" in image]
            for workload, images in images_after_a_tag_bump(overlay, "9.9.9", DIGEST, alter).items()}
    check(workloads <= {workload for workload, images in ours.items() if images}, f"{overlay}: the bumped render lacks one of {sorted(workloads)}")
    for workload, images in ours.items():
        check(all(image.endswith(f":9.9.9@{DIGEST}") for image in images),
              f"{overlay}: {workload} keeps {images} when the base's tag is bumped to 9.9.9@{DIGEST[:12]}…: name the image in one place")


def job_image_left_behind(copied):
    """The overlay names the Job's image itself, and the component takes none."""
    component = copied / "components/migration-job/kustomization.yaml"
    component.write_text(component.read_text().split("\nreplacements:")[0] + "\n")
    overlay = copied / "separate-migrations/kustomization.yaml"
    overlay.write_text(overlay.read_text() + "images:\n  - {name: orders-api, newName: registry.example.com/orders-span-links/orders-api, newTag: \"0.1.0\"}\n")


MIGRATING = {"Deployment/orders-api", "CronJob/orders-batch", "Job/orders-migrate"}
check_upgrade_in_one_place("separate-migrations", MIGRATING)
check_upgrade_in_one_place("laptop", {"Deployment/orders-api", "CronJob/orders-batch"})
catches("job_image_left_behind", lambda: check_upgrade_in_one_place("separate-migrations", MIGRATING, job_image_left_behind))
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
                check(probe not in container or container[probe].get("timeoutSeconds"), f"{at}: {probe} has no timeoutSeconds (1 s by default)")
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
    collector = by_name.get(("StatefulSet", "otel-collector"))
    check_collector_available(render, objects)
    if render == "base":
        collector_mutations_fail(objects)
    if collector:
        pod = dig(collector, "spec.template.spec")
        container = next((c for c in pod["containers"] if c["name"] == "otel-collector"), {})
        check(container, f"{render}: statefulset/otel-collector has no container named otel-collector")
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
            check_collector_memory(render, container, yaml.safe_load(mounted))

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
        check_probes(f"{render}: orders-api", container)
        check_replicas_spread(render, api, [o for o in objects if o["kind"] == "PodDisruptionBudget"])

    # The production rules: each exporting pod told apart, accounts and labels, network policies.
    for o in objects:
        for container in (dig(o, PODS[o["kind"]]) or {}).get("containers", []) if o["kind"] in PODS else []:
            if "OTEL_EXPORTER_OTLP_ENDPOINT" in env_names(container, by_name):
                check_identity(f"{render}: {o['kind'].lower()}/{o['metadata']['name']}", o["kind"], container, telemetry)
    check_accounts_and_labels(render, objects, pods)
    settings = dig(next((o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("otel-collector-settings")), {}), "data") or {}
    check_network(render, objects, settings)
    check_migrations(render, by_name)
    summary.append(f"{render} {len(objects)} objects, {len(pods)} pod specs")

# The other-namespace overlay without its egress patch: the network rules must refuse it.
without_egress = docs_overlays["docs-my-cluster"].split("\npatches:")[0] + "\n"
unpatched = [o for o in yaml.safe_load_all(pasted_beside_the_others("docs-my-cluster-unpatched", without_egress) or "") if o]
unpatched_settings = next(dig(o, "data") for o in unpatched if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("otel-collector-settings"))
catches("egress_patch_missing", lambda: check_network("docs-my-cluster without its patches", unpatched, unpatched_settings))

for problem in problems:
    print(f"kubernetes: {problem}", file=sys.stderr)
if not problems:
    print(f"kubernetes: rendered, valid against 1.32.0 (strict), and the project's rules hold: {'; '.join(summary)}")
sys.exit(1 if problems else 0)
