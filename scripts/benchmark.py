#!/usr/bin/env python3
"""What does tracing every order and linking every batch cost? One run on this
machine, side by side, printed as a table with ratios:

- orders-api under wrk (flat out, the same concurrency, each order with an
  Idempotency-Key of its own) with OTLP export on, with the SDK disabled, and a
  raw single-row INSERT of the same row by pgbench: orders/s, p50/p99, CPU µs
  per order, peak RSS;
- orders-batch --once over pending orders at a few batch sizes, against its
  own claim and mark statements in a plain loop (the raw_loop example);
- OTLP bytes per order, as a null OTLP/HTTP receiver counts them, from runs
  that dropped no span;
- the spans each run dropped (the API says so at exit, the batch in its
  summary), and orders-api at its peak against receivers that answer each
  export after a fixed delay, with the SDK's export settings and with the
  services' own;
- orders-batch --once against receivers slow, uneven, refusing and gone for
  a while (a port closed for some seconds), and with
  --baseline-batch an earlier build of it beside this one, taking turns.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres scripts/benchmark.py

It builds the release binaries, creates a scratch database on that server (and
drops it), and needs pgbench and wrk. Telemetry settings are docker-compose.yml's. Each
figure is the median of --runs runs, the runs of what is compared taking turns:
a shared machine drifts by more than the differences measured.
"""
import argparse
import glob
import http.server
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")
# The telemetry docker-compose.yml gives both services (over HTTP here, so
# that a few lines of Python can count the bytes).
COMPOSE_TELEMETRY = {
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
    "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=compose,deployment.environment=compose",
    "OTEL_METRIC_EXPORT_INTERVAL": "10000",
    "RUST_LOG": "info",
}
ROW = ("INSERT INTO orders (id, customer_id, items, total_cents, traceparent, tracestate, idempotency_key) "
       "VALUES (gen_random_uuid(), 'customer-7', "
       "'[{\"sku\": \"MUG-2\", \"quantity\": 3, \"unit_price_cents\": 474}, {\"sku\": \"PEN-3\", \"quantity\": 4, \"unit_price_cents\": 575}]', "
       "3722, '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', NULL, gen_random_uuid()::text) "
       "RETURNING id, customer_id, items, total_cents, status, created_at, traceparent, tracestate, "
       "attempts, last_error, processed_at, batch_trace_id, batch_span_id, batch_span_sampled;\n")
# The order of ROW as a client posts it, each with an Idempotency-Key of its
# own (as orders-load sends, and as ROW stores): wrk's client, like pgbench's,
# costs far less CPU per request than orders-load's (docs/benchmark.md), so
# the two sides compare the servers. wrk corrects its
# percentiles for coordinated omission; pgbench's log is raw.
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"customer_id": "customer-7", "items": [{"sku": "MUG-2", "quantity": 3, "unit_price_cents": 474}, {"sku": "PEN-3", "quantity": 4, "unit_price_cents": 575}]}'
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread", threads)
end
local sent = 0
function request()
  sent = sent + 1
  wrk.headers["Idempotency-Key"] = "{run}-" .. thread .. "-" .. sent
  return wrk.format()
end
"""
# POST /orders, its receive-order span, and validate and persist-order under it.
SPANS_PER_ORDER = 4
SEED = ("INSERT INTO orders (id, customer_id, items, total_cents, created_at, traceparent) "
        "SELECT gen_random_uuid(), 'customer-' || i % 1000, "
        "'[{\"sku\": \"MUG-2\", \"quantity\": 1, \"unit_price_cents\": 1250}]', 1250, "
        "now() - make_interval(secs => ({n} - i) / 1000.0), "
        "'00-' || md5('trace' || i) || '-' || substr(md5('span' || i), 1, 16) || '-01' "
        "FROM generate_series(1, {n}) AS i")


def accepted_after(delay):
    """Every export accepted, `delay` seconds after it arrived."""
    return lambda _: (delay, 200, {})


def closed_for(seconds, delay):
    """Accepted after `delay`, but the 3rd export closes the port for
    `seconds`, as a collector restarting does: that export gets no answer and
    every connection meanwhile is refused."""
    return lambda n: (seconds, None, {}) if n == 3 else (delay, 200, {})


def unavailable_for(seconds, delay):
    """Accepted after `delay`, but from the 3rd export on every one refused
    with 503 for `seconds`, as a collector's memory limiter does."""
    since = []

    def answer(n):
        if n >= 3:
            since or since.append(time.monotonic())
            if time.monotonic() - since[0] < seconds:
                return 0, 503, {}
        return delay, 200, {}
    return answer


class Received:
    """A null OTLP/HTTP receiver: answers the n-th trace export (from 1) as
    `answer(n)` says, (seconds to wait, HTTP status, headers), everything else
    at once, and counts the bytes of what it accepts. A status of None closes
    its port for that many seconds instead."""

    def __init__(self, answer=accepted_after(0.0)):
        self.bytes, self.lock, self.traces = 0, threading.Lock(), 0
        received = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                delay, status, headers = 0, 200, {}
                if self.path.endswith("/v1/traces"):
                    with received.lock:
                        received.traces += 1
                        n = received.traces
                    delay, status, headers = answer(n)
                if status is None:
                    threading.Thread(target=received.close_for, args=(delay,)).start()
                    self.close_connection = True
                    return
                if status == 200:
                    with received.lock:
                        received.bytes += len(body)
                time.sleep(delay)
                self.send_response(status)
                for name, value in {**headers, "content-type": "application/x-protobuf", "content-length": "0"}.items():
                    self.send_header(name, value)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.handler = Handler
        self.serve(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def serve(self, address):
        self.server = http.server.ThreadingHTTPServer(address, self.handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close_for(self, seconds):
        address = self.server.server_address
        self.server.shutdown()
        self.server.server_close()
        time.sleep(seconds)
        self.serve(address)

    def take(self):
        with self.lock:
            taken, self.bytes = self.bytes, 0
        return taken


def psql(url, sql):
    subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql], check=True, capture_output=True)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def peak_rss(pid, peak):
    """Follows the process's own high-water mark (VmHWM) until it exits:
    wait4's ru_maxrss would count this script's memory, which the child had
    before its exec."""
    while True:
        try:
            with open(f"/proc/{pid}/status") as status:
                kib = int(re.search(r"VmHWM:\s+(\d+) kB", status.read())[1])
        except (OSError, TypeError):
            return
        peak[0] = max(peak[0], kib)
        time.sleep(0.01)


def run_measured(command, env, until=None):
    """Runs `command`; returns (its output, CPU seconds, peak RSS in MiB)."""
    log = os.path.join(ROOT, "target", f"benchmark-{os.path.basename(command[0])}.log")
    peak = [0]
    with open(log, "w") as output:
        child = subprocess.Popen(command, env={**os.environ, **env}, stdout=output, stderr=subprocess.STDOUT)
        watcher = threading.Thread(target=peak_rss, args=(child.pid, peak))
        watcher.start()
        if until:
            until(child)
        _, status, usage = os.wait4(child.pid, 0)
        watcher.join()
    with open(log) as written:
        output = written.read()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(command)} failed:\n{output}")
    return output, usage.ru_utime + usage.ru_stime, peak[0] / 1024


# The SDK's own export settings, where the services choose their own.
SDK_EXPORT = {"OTEL_BSP_MAX_QUEUE_SIZE": "2048", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "512"}


def dropped(output, pattern):
    """The spans a service said it dropped (none when it said nothing)."""
    found = re.search(pattern, output)
    return int(found[1]) if found else 0


def api(args, database, receiver, export, settings=None):
    port = free_port()
    env = {**COMPOSE_TELEMETRY, "DATABASE_URL": database, "LISTEN_ADDR": f"127.0.0.1:{port}",
           "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_SDK_DISABLED": "false" if export else "true",
           **(settings or {})}
    load = {}

    def drive(child):
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz")
                break
            except OSError:
                time.sleep(0.1)
        receiver.take()
        script = os.path.join(ROOT, "target", "benchmark-wrk.lua")
        with open(script, "w") as file:
            file.write(WRK_SCRIPT.replace("{run}", f"{os.getpid()}-{time.monotonic_ns()}"))
        threads = str(min(args.concurrency, 2))
        try:
            run = subprocess.run(["wrk", "-t", threads, "-c", str(args.concurrency), "-d", f"{args.seconds}s", "--latency",
                                  "-s", script, f"http://127.0.0.1:{port}/orders"], capture_output=True, text=True)
            load["summary"] = run.stdout + run.stderr
        finally:
            # Stopped whatever wrk did, or the measurement would wait for it forever.
            child.send_signal(signal.SIGTERM)

    output, cpu, rss = run_measured([os.path.join(RELEASE, "orders-api")], env, drive)
    summary = load["summary"]
    if "Requests/sec" not in summary or "Non-2xx" in summary or "Socket errors" in summary:
        sys.exit(f"wrk failed, or orders-api refused or failed orders:\n{summary}")
    created = int(re.search(r"(\d+) requests in", summary)[1])
    return {"rate": float(re.search(r"Requests/sec:\s+([\d.]+)", summary)[1]),
            "p50": wrk_ms(summary, 50), "p99": wrk_ms(summary, 99),
            "cpu_us": cpu / created * 1e6, "rss": rss, "bytes": receiver.take() / created,
            "dropped": dropped(output, r"(\d+) spans not exported in all"), "orders": created}


def wrk_ms(summary, percentile):
    """A percentile of wrk's latency distribution, in milliseconds."""
    value, unit = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\s*$", summary, re.M).groups()
    return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]


def pgbench(database, script, clients, seconds):
    """pgbench's rate, and its latencies' p50 and p99 from its per-transaction log."""
    target = os.path.join(ROOT, "target")
    path, prefix = os.path.join(target, "benchmark.sql"), os.path.join(target, "benchmark-pgbench")
    with open(path, "w") as file:
        file.write(script)
    for old in glob.glob(prefix + ".*"):
        os.remove(old)
    run = subprocess.run(["pgbench", "-n", "-M", "prepared", "-c", str(clients), "-j", str(min(clients, 2)), "-T", str(seconds),
                          "-l", "--log-prefix", prefix, "-f", path, database],
                         capture_output=True, text=True, check=True)
    # Each line: client, transaction, latency in µs, ...
    micros = sorted(int(line.split()[2]) for log in glob.glob(prefix + ".*") for line in open(log))
    return {"rate": float(re.search(r"tps = ([\d.]+)", run.stdout)[1]),
            "p50": micros[len(micros) // 2] / 1000, "p99": micros[len(micros) * 99 // 100] / 1000}


def batch_seconds(database, receiver, size, binary=None, settings=None):
    """How long orders-batch --once (this build's, or `binary`) takes, its
    peak RSS and the spans it dropped."""
    receiver.take()
    env = {**COMPOSE_TELEMETRY, "DATABASE_URL": database, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
           "BATCH_MAX_SIZE": str(size), **(settings or {})}
    started = time.monotonic()
    output, _, rss = run_measured([binary or os.path.join(RELEASE, "orders-batch"), "--once"], env)
    return time.monotonic() - started, rss, dropped(output, r"spans_dropped=(\d+)")


def pending_orders(database, count):
    """Nothing in the table but `count` pending orders."""
    psql(database, "TRUNCATE orders")
    psql(database, SEED.replace("{n}", str(count)))


def batch(args, database, receiver, size, start_and_exit):
    pending_orders(database, args.orders)
    seconds, rss, lost = batch_seconds(database, receiver, size)
    run = {"rate": args.orders / (seconds - start_and_exit), "rss": rss, "bytes": receiver.take() / args.orders,
           "dropped": lost}
    # The baseline: the same claim and mark statements in a plain loop.
    pending_orders(database, args.orders)
    raw = subprocess.run([os.path.join(RELEASE, "examples", "raw_loop")], env={**os.environ, "DATABASE_URL": database, "BATCH_MAX_SIZE": str(size)},
                         capture_output=True, text=True, check=True)
    run["raw"] = float(re.search(rf"raw loop: {args.orders} orders in [\d.]+ s, ([\d.]+)/s", raw.stdout)[1])
    run["ratio"] = run["rate"] / run["raw"]
    if args.baseline_batch:
        pending_orders(database, args.orders)
        seconds, _, _ = batch_seconds(database, receiver, size, args.baseline_batch)
        run["baseline ratio"] = args.orders / (seconds - start_and_exit) / run["raw"]
    return run


def medians(runs):
    """Each figure's median over the runs; bytes per order over those that
    dropped no span (None if every one did), and the most any run dropped."""
    middle = {key: sorted(run[key] for run in runs)[len(runs) // 2] for key in runs[0]}
    if "dropped" in middle:
        whole = sorted(run["bytes"] for run in runs if run["dropped"] == 0)
        middle["bytes"] = whole[len(whole) // 2] if whole else None
        middle["dropped"] = max(run["dropped"] for run in runs)
    return middle


def bytes_per_order(run):
    return "—" if run["bytes"] is None else f"{run['bytes']:.0f}"


# Receivers a batch meets: slow, uneven, refusing (HTTP's retryable answers;
# 429 with Retry-After as a throttling receiver sends it), and gone for a
# while (a restart, a memory limiter), each with the most spans in one export
# (fewer, larger exports against the slow one, more against the uneven ones
# so that their unevenness shows) and settings of its own; each answers as a
# new one made for each run says.
UNBOUNDED = {"OTEL_BSP_BLOCK_ON_QUEUE_FULL_TIMEOUT": "0"}
SLOW_RECEIVERS = {
    "each export after 2 s": (lambda: accepted_after(2.0), 2048, {}),
    "100 ms, the 6th 1.5 s, every 6th after 3.5 s": (lambda: lambda n: (1.5 if n == 6 else 3.5 if n % 6 == 0 else 0.1, 200, {}), 512, {}),
    "every 5th 503, every 7th 429 Retry-After 1 s": (lambda: lambda n: (0, 503, {}) if n % 5 == 0 else (0, 429, {"retry-after": "1"}) if n % 7 == 0 else (0.05, 200, {}), 512, {}),
    "300 ms, port closed 3 s at the 3rd": (lambda: closed_for(3, 0.3), 2048, {}),
    "300 ms, port closed 10 s at the 3rd": (lambda: closed_for(10, 0.3), 2048, {}),
    "1.5 s, every one 503 for 4 s from the 3rd": (lambda: unavailable_for(4, 1.5), 2048, {}),
    "300 ms, port closed 20 s at the 3rd, timeout 0": (lambda: closed_for(20, 0.3), 2048, UNBOUNDED),
}


def batch_against_slow_receivers(args, database):
    """orders-batch --once over --slow-orders orders against each of
    SLOW_RECEIVERS, and beside it --baseline-batch's, each run with a
    receiver of its own."""
    rows = []
    for name, (answers, export_size, more) in SLOW_RECEIVERS.items():
        builds = [("this build", None)] + ([("baseline", args.baseline_batch)] if args.baseline_batch else [])
        for label, binary in builds:
            receiver = Received(answers())
            pending_orders(database, args.slow_orders)
            settings = {"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": str(export_size), **more}
            seconds, _, lost = batch_seconds(database, receiver, 1000, binary, settings)
            rows.append((f"{name}, exports of {export_size}", label, seconds, lost))
            receiver.server.shutdown()
    return rows


def api_against_slow_receivers(args, database):
    """orders-api flat out against receivers answering each export after each
    of --export-delays-ms, with the SDK's export settings and the services'."""
    rows = []
    for delay in (int(ms) for ms in args.export_delays_ms.split(",")):
        receiver = Received(delay / 1000)
        for label, settings in (("SDK's", SDK_EXPORT), ("services'", {})):
            run = api(args, database, receiver, export=True, settings=settings)
            rows.append((delay, label, run))
        receiver.server.shutdown()
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="how long each API run lasts")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight, for the API and pgbench")
    parser.add_argument("--orders", type=int, default=100_000, help="pending orders for each batch run")
    parser.add_argument("--batch-sizes", default="500,1000,5000", help="BATCH_MAX_SIZE values to run")
    parser.add_argument("--runs", type=int, default=3, help="runs of each, whose median is printed")
    parser.add_argument("--export-delays-ms", default="0,25,50,100,200",
                        help="orders-api against receivers answering each export after these delays (empty: skip)")
    parser.add_argument("--slow-orders", type=int, default=20_000,
                        help="pending orders for orders-batch against each slow receiver (0: skip)")
    parser.add_argument("--baseline-batch", help="an earlier orders-batch binary, run beside this build's")
    args = parser.parse_args()
    server = os.environ.get("DATABASE_URL") or sys.exit("DATABASE_URL names a PostgreSQL server")
    for tool in ("pgbench", "wrk"):
        shutil.which(tool) or sys.exit(f"{tool} is needed: apt-get install postgresql-contrib wrk")
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "orders-api", "-p", "orders-batch",
                    "--bins", "--example", "raw_loop"], cwd=ROOT, check=True)
    name = f"orders_benchmark_{os.getpid()}"
    parts = urllib.parse.urlsplit(server)
    database = urllib.parse.urlunsplit(parts._replace(path="/" + name))
    psql(server, f"CREATE DATABASE {name}")
    receiver = Received()
    try:
        apis = [(api(args, database, receiver, export=True), api(args, database, receiver, export=False),
                 pgbench(database, ROW, args.concurrency, args.seconds)) for _ in range(args.runs)]
        on, off, raw = (medians([run[variant] for run in apis]) for variant in range(3))
        slow = api_against_slow_receivers(args, database) if args.export_delays_ms else []
        psql(database, "TRUNCATE orders")
        start_and_exit, _, _ = batch_seconds(database, receiver, 1000)
        sizes = [int(size) for size in args.batch_sizes.split(",")]
        batches = {size: medians([batch(args, database, receiver, size, start_and_exit) for _ in range(args.runs)]) for size in sizes}
        slow_batches = batch_against_slow_receivers(args, database) if args.slow_orders else []
    finally:
        psql(server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    tls = "TLS" if "sslmode=disable" not in server else "plain TCP"
    print(f"\norders-api, {args.concurrency} requests in flight, {args.seconds} s each, median of {args.runs}, PostgreSQL over {tls} (sslmode as DATABASE_URL says)")
    print(f"{'':<26}{'orders/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'CPU µs/order':>14}{'peak RSS MB':>13}{'OTLP B/order':>14}{'dropped':>9}")
    for label, run in (("export on", on), ("SDK disabled", off)):
        print(f"{label:<26}{run['rate']:>10.0f}{run['p50']:>9.2f}{run['p99']:>9.2f}{run['cpu_us']:>14.0f}{run['rss']:>13.1f}"
              f"{bytes_per_order(run):>14}{run['dropped']:>9}")
    print(f"{'raw INSERT (pgbench)':<26}{raw['rate']:>10.0f}{raw['p50']:>9.2f}{raw['p99']:>9.2f}")
    print(f"ratios: export on / raw INSERT {on['rate'] / raw['rate']:.2f}; export on / SDK disabled {on['rate'] / off['rate']:.2f}")
    print(f"\norders-batch --once over {args.orders} pending orders, export on, median of {args.runs} (its start and exit, {start_and_exit:.2f} s with nothing pending, left out)")
    baseline = f"{'baseline ratio':>16}" if args.baseline_batch else ""
    print(f"{'BATCH_MAX_SIZE':<16}{'orders/s':>10}{'raw loop/s':>12}{'ratio':>8}{'peak RSS MB':>13}{'OTLP B/order':>14}{'dropped':>9}{baseline}")
    for size, run in batches.items():
        baseline = f"{run['baseline ratio']:>16.2f}" if args.baseline_batch else ""
        print(f"{size:<16}{run['rate']:>10.0f}{run['raw']:>12.0f}{run['ratio']:>8.2f}{run['rss']:>13.1f}"
              f"{bytes_per_order(run):>14}{run['dropped']:>9}{baseline}")
    if slow_batches:
        print(f"\norders-batch --once over {args.slow_orders} pending orders against slow receivers, one run each")
        print(f"{'receiver':<64}{'build':<12}{'seconds':>9}{'orders/s':>10}{'dropped':>9}")
        for name, label, seconds, lost in slow_batches:
            print(f"{name:<64}{label:<12}{seconds:>9.1f}{args.slow_orders / seconds:>10.0f}{lost:>9}")
    if slow:
        print(f"\norders-api flat out against a receiver answering each export after a delay, one run each ({COMPOSE_TELEMETRY['OTEL_EXPORTER_OTLP_COMPRESSION']})")
        print(f"{'delay ms':<10}{'export settings':<18}{'orders/s':>10}{'spans':>10}{'dropped':>9}{'dropped %':>11}")
        for delay, label, run in slow:
            spans = run["orders"] * SPANS_PER_ORDER
            print(f"{delay:<10}{label:<18}{run['rate']:>10.0f}{spans:>10}{run['dropped']:>9}{100 * run['dropped'] / spans:>11.1f}")


if __name__ == "__main__":
    main()
