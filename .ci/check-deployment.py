"""The deployment files against the rules this project keeps, which no linter
knows: checked on the model Docker Compose itself prints (`docker-compose
config --format json`), on the collector configurations as YAML, and on
ClickHouse's as XML.

Run by .ci/run with the pinned tools: check-deployment.py <docker-compose binary>.
Whether each service reads every variable compose gives it is proven by the
services' own tests, which start the binaries with that environment.
"""
import json
import pathlib
import re
import subprocess
import sys
from xml.etree import ElementTree

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
OURS = {"postgres", "orders-api", "orders-batch", "otel-collector", "otel-collector-queue-owner"}
problems = []


def check(ok, problem):
    if not ok:
        problems.append(problem)


def model(*args):
    printed = subprocess.run([sys.argv[1], *args, "config", "--format", "json"], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(printed.stdout)["services"]


local, cloud = model(), model("--env-file", "signoz-cloud.env.example")

check(sorted(s["published"] for s in local.values() for s in s.get("ports", [])) == ["3000", "8080"], "published ports are 3000 and 8080")
for name, service in local.items():
    for port in service.get("ports", []):
        check(port.get("host_ip") == "127.0.0.1", f"{name} publishes {port['published']} beyond 127.0.0.1")
    for dependency, how in service.get("depends_on", {}).items():
        healthy = how["condition"] != "service_healthy" or "healthcheck" in local[dependency]
        check(healthy, f"{name} waits for {dependency} to be healthy; it has no healthcheck")
    for volume in service.get("volumes", []):
        check(volume["type"] != "bind" or pathlib.Path(volume["source"]).exists(), f"{name} mounts {volume['source']}, which is missing")
    if "build" in service:
        targets = re.findall(r"^FROM \S+ AS (\S+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
        check(service["build"].get("target") in targets, f"{name} builds a target the Dockerfile lacks")
    check(name in OURS or service.get("profiles") == ["signoz"], f"{name} is SigNoz's and runs outside the signoz profile")
# `docker compose up -d --wait` (the README's quick start) fails on a one-shot
# service that exits, unless a long-running one waits for it to complete.
for services in (local, cloud):
    lasting = {name for name, service in services.items() if service.get("restart") in ("always", "unless-stopped")}
    awaited = {dependency for name in lasting for dependency, how in services[name].get("depends_on", {}).items()
               if how["condition"] == "service_completed_successfully"}
    for name in sorted(set(services) - lasting - awaited):
        check(False, f"{name} exits, and no long-running service waits for it to complete: `up --wait` would fail")
check(set(cloud) == OURS, f"with the SigNoz Cloud settings, only {sorted(OURS)} start")
# The load generator starts only under its own profile, from its Dockerfile target.
loaded = model("--profile", "load")
check(set(loaded) - set(local) == {"orders-load"} and loaded["orders-load"].get("profiles") == ["load"], "orders-load runs under the load profile only")
check(re.search(r"^FROM \S+ AS orders-load$", (ROOT / "Dockerfile").read_text(), re.MULTILINE), "the Dockerfile has an orders-load target")
check(cloud["otel-collector"]["environment"]["SIGNOZ_OTLP_ENDPOINT"].endswith(".signoz.cloud:443"), "Cloud settings forward to SigNoz Cloud")

ours = yaml.safe_load((ROOT / "otel-collector.yaml").read_text())
signoz = yaml.safe_load((ROOT / "signoz/otel-collector.yaml").read_text())
for file, config, service in [("otel-collector.yaml", ours, "otel-collector"), ("signoz/otel-collector.yaml", signoz, "signoz-otel-collector")]:
    for pipeline, parts in config["service"]["pipelines"].items():
        for kind in ("receivers", "processors", "exporters"):
            for component in parts.get(kind, []):
                defined = component in config.get(kind, {}) or component in config.get("connectors", {})
                check(defined, f"{file}: {pipeline} names {component}, which is not defined")
    # An unset ${env:...} becomes an empty string, which the collector refuses (or takes).
    read = set(re.findall(r"\$\{env:(\w+)", (ROOT / file).read_text()))
    given = set(local[service].get("environment", {}))
    check(read <= given, f"{service} reads {sorted(read - given)}, which compose does not give it")
    check(service != "otel-collector" or read == given, f"{service} is given {sorted(given - read)}, which it never reads")

for pipeline, parts in ours["service"]["pipelines"].items():
    # Resource detection would stamp the collector's own host on the services' telemetry.
    check(parts["processors"] == ["memory_limiter"], f"{pipeline}: memory_limiter alone (no batch processor: the exporter batches after its queue on disk; no resource detection)")
    check(parts["exporters"] == ["otlp_grpc/signoz"], f"{pipeline} forwards to SigNoz")
check(set(ours["service"]["pipelines"]) == {"traces", "metrics", "logs"}, "every signal has a pipeline")
# Acknowledged means on disk: the exporter batches after its persistent queue.
queue = ours["exporters"]["otlp_grpc/signoz"].get("sending_queue", {})
check(queue.get("storage") and (queue.get("batch") or {}).get("sizer") == "items",
      "otel-collector.yaml's exporter does not batch in its persistent sending_queue (storage, batch by items)")
# otel/opentelemetry-collector-contrib 0.159 renamed these; the old names only warn, for now.
for deprecated in ("otlp", "otlphttp", "resourcedetection"):
    names = [name.split("/")[0] for name in [*ours["exporters"], *ours["processors"]]]
    check(deprecated not in names, f"otel-collector.yaml uses the deprecated {deprecated}")

# The image runs the release the tests build the collector from.
release = yaml.safe_load((ROOT / "collector/builder-config.yaml").read_text())["dist"]["version"]
image = local["otel-collector"]["image"]
check(image == f"otel/opentelemetry-collector-contrib:{release}", f"the collector's image is {image}, not the release collector/builder-config.yaml builds ({release})")

port = lambda endpoint: endpoint.rsplit(":", 1)[1]
grpc = port(ours["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"])
for name in ("orders-api", "orders-batch"):
    environment = local[name]["environment"]
    check(environment["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://otel-collector:{grpc}" and environment["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc", f"{name} exports over gRPC to the collector")
signoz_grpc = port(signoz["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"])
check(local["otel-collector"]["environment"]["SIGNOZ_OTLP_ENDPOINT"] == f"signoz-otel-collector:{signoz_grpc}", "the collector forwards to SigNoz's collector")
check(signoz["exporters"]["clickhousetraces"]["datasource"].startswith("tcp://clickhouse:9000/"), "SigNoz writes to the compose ClickHouse")
# What ours accepts it forwards; gRPC's default limit is 4 MiB.
limit = lambda config: config["receivers"]["otlp"]["protocols"]["grpc"].get("max_recv_msg_size_mib", 4)
check(limit(signoz) >= limit(ours), "SigNoz's collector accepts gRPC messages as large as the project's collector does")

clickhouse = ElementTree.parse(ROOT / "signoz/clickhouse/config.d/signoz.xml").getroot()
check(clickhouse.findtext("send_crash_reports/enabled") == "false", "ClickHouse sends no crash reports")
system_logs = ["query_log", "query_thread_log", "query_views_log", "query_metric_log", "trace_log", "part_log", "text_log",
               "metric_log", "asynchronous_metric_log", "latency_log", "error_log", "processors_profile_log"]
for log in system_logs:
    check(clickhouse.findtext(f"{log}/ttl"), f"ClickHouse's system.{log} has a TTL")

# ClickHouse answers /ping before its ZooKeeper session works: the schema waits for `migrate ready`.
steps = [line.strip(" &") for line in local["signoz-telemetrystore-migrator"]["command"][-1].splitlines()]
check(steps[0] == "/signoz-otel-collector migrate ready", "the migrator runs `migrate ready` before anything else")

for problem in problems:
    print(f"deployment: {problem}", file=sys.stderr)
sys.exit(1 if problems else 0)
