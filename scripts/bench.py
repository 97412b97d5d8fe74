#!/usr/bin/env python3
"""The system-load benchmark: vaka against the raw broker and the raw
database, on the same machine and services, in one run.

    scripts/bench.py                 # everything (about 25 minutes here)
    scripts/bench.py --quick         # a smoke run (short, few loads)
    scripts/bench.py --only pg       # one backend (pg or sqlite)

For each backend (PostgreSQL, SQLite) it measures:

1. the raw broker: `vaka-sim baseline broker` (rumqttc publishers -> one
   MQTT 5 subscriber) through the benchmark's own Mosquitto at QoS 1 and
   QoS 0, with the load mode's payload and as many publishers as devices;
2. vaka end to end: `vaka serve` (release) on a fresh database for every
   run, driven by `vaka-sim load`: a ramp of offered rates (x1.2 a step)
   until vaka no longer keeps up; the highest step it kept up with (nothing
   lost, everything stored within a second of the last publish, alerts in
   under a second) is the maximum sustained rate. Then runs at fixed
   fractions of that rate (latency against offered load);
3. the raw database: `vaka-sim baseline database` (PostgreSQL COPY, SQLite
   batched INSERT) of as many observation rows as the maximum run stored,
   into a fresh database with vaka's own table layout;

then the memory figures (10 000 connected devices; 100 000 patients with
14 days of daily readings), and writes bench-results/results.json,
bench-results/load.png and a summary on stdout.

Needs: PostgreSQL on 127.0.0.1:5432 (user postgres, trust; psql), mosquitto
in PATH, python3 with matplotlib (pip install matplotlib). Environment:
VAKA_BENCH_PG (admin URL, default postgres://postgres@127.0.0.1:5432/postgres).
"""

import argparse
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# cargo builds where CARGO_TARGET_DIR says (as .ci/run sets it), else in target/.
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
VAKA = TARGET / "vaka"
SIM = TARGET / "vaka-sim"
PG_ADMIN = os.environ.get("VAKA_BENCH_PG", "postgres://postgres@127.0.0.1:5432/postgres")
PG_BASE = PG_ADMIN.rsplit("/", 1)[0]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def raise_fd_limit():
    """A socket per device, in vaka-sim and in the broker (which inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def psql(sql):
    subprocess.run(["psql", PG_ADMIN, "-q", "-v", "ON_ERROR_STOP=1", "-c", sql],
                   check=True, stdout=subprocess.DEVNULL)


class Database:
    """A fresh database of one backend, dropped at the end."""

    def __init__(self, backend):
        self.backend = backend
        self.name = "vaka_bench_" + uuid.uuid4().hex[:10]
        if backend == "pg":
            psql(f"CREATE DATABASE {self.name}")
            self.url = f"{PG_BASE}/{self.name}"
        else:
            self.dir = tempfile.mkdtemp(prefix="vaka-bench-")
            self.url = f"sqlite://{self.dir}/vaka.db"
        subprocess.run([str(VAKA), "migrate", "--database-url", self.url], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def drop(self):
        if self.backend == "pg":
            psql(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
        else:
            subprocess.run(["rm", "-rf", self.dir])


class Broker:
    """The benchmark's own Mosquitto: in-flight and queue limits raised, as
    in deploy/ (a stock one queues 1 000 messages for a subscriber that is
    behind and then drops them). The queue is unlimited here: the ramp's
    last step overloads vaka on purpose, and a backlog beyond a limit would
    be the broker's loss, not vaka's."""

    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="vaka-bench-mosquitto-")
        conf = Path(self.dir) / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_connections -1\nmax_inflight_messages 1000\nmax_queued_messages 0\n"
            "set_tcp_nodelay true\nlog_dest stderr\nlog_type error\n")
        self.proc = subprocess.Popen(["mosquitto", "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"mqtt://127.0.0.1:{self.port}"
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def rss(self):
        return rss_kib(self.proc.pid)

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


class Vaka:
    """A `vaka serve` (release) on a database."""

    def __init__(self, db, broker, extra=()):
        self.token = "bench-" + uuid.uuid4().hex
        self.root = "bench/" + uuid.uuid4().hex[:8]
        self.log = open(tempfile.mktemp(prefix="vaka-bench-", suffix=".log"), "w")
        self.proc = subprocess.Popen(
            [str(VAKA), "serve", "--database-url", db.url, "--mqtt-url", broker.url,
             "--mqtt-client-id", "vaka-bench-" + uuid.uuid4().hex[:8], "--topic-root", self.root,
             "--http", "127.0.0.1:0", "--api-token", self.token,
             # The load mode's devices send far faster than real ones (a
             # thousand devices carry the whole offered load): lift the
             # per-device limits, or the gateway would refuse most of it.
             "--device-rate", "1000000", "--device-burst", "1000000", *extra],
            stdout=subprocess.PIPE, stderr=self.log, text=True,
            env={**os.environ, "VAKA_LOG": "warn"})
        deadline = time.time() + 600
        self.base = None
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"vaka exited; log: {self.log.name}")
            m = re.match(r"vaka: listening on (\S+)", line)
            if m:
                self.base = m.group(1)
                break
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(self.base + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("vaka not ready")

    def rss(self, field="VmRSS"):
        return rss_kib(self.proc.pid, field)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def sim(args, out):
    """Runs vaka-sim with --json and returns the JSON (and its exit code)."""
    r = subprocess.run([str(SIM), *args, "--json", str(out)], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, env={**os.environ, "RUST_LOG": "warn"})
    sys.stderr.write(r.stdout)
    if r.returncode != 0:
        log(r.stderr[-3000:])
    return (json.loads(out.read_text()) if out.exists() else None), r.returncode


def load_run(backend, broker, devices, rate, secs, tmp, label):
    db = Database(backend)
    vaka = Vaka(db, broker)
    try:
        rss_idle = vaka.rss()
        mosq_before = broker.rss()
        out = Path(tmp) / f"load-{backend}-{label}.json"
        report, code = sim(["load", "--mqtt-url", broker.url, "--topic-root", vaka.root,
                            "--api", vaka.base, "--api-token", vaka.token,
                            "--database-url", db.url, "--devices", str(devices),
                            "--rate", str(rate), "--duration", str(secs),
                            "--drain-timeout", "60"], out)
        if report is None:
            raise RuntimeError(f"load run failed; vaka log {vaka.log.name}")
        report["exit_code"] = code
        report["vaka_rss_idle_kib"] = rss_idle
        report["vaka_rss_kib"] = vaka.rss()
        report["vaka_hwm_kib"] = vaka.rss("VmHWM")
        report["mosquitto_rss_before_kib"] = mosq_before
        report["mosquitto_rss_kib"] = broker.rss()
        return report
    finally:
        vaka.stop()
        db.drop()


def population(patients, days, broker, tmp):
    """100 000 patients with daily readings: written straight into
    PostgreSQL (registering them one by one through the API would take the
    whole benchmark), then a fresh `vaka serve` rebuilds its windows from
    them, as after any restart; its memory is read when it is ready."""
    db = Database("pg")
    try:
        now_sql = "now()"
        sql = f"""
        INSERT INTO patients (patient_id, display_name, timezone, program, created_at)
          SELECT 'pop-' || i, 'Befolkning ' || i, 'Europe/Stockholm', 'heart_failure', {now_sql} - interval '30 days'
          FROM generate_series(1, {patients}) i;
        INSERT INTO devices (device_id, kind, registered_at)
          SELECT 'pop-' || i || '-' || k, k, {now_sql} - interval '30 days'
          FROM generate_series(1, {patients}) i, unnest(ARRAY['scale', 'bp_cuff']) k;
        INSERT INTO device_bindings (device_id, patient_id, valid_from)
          SELECT 'pop-' || i || '-' || k, 'pop-' || i, 'epoch'
          FROM generate_series(1, {patients}) i, unnest(ARRAY['scale', 'bp_cuff']) k;
        INSERT INTO observations (time, patient_id, device_id, metric, value, unit, received_at)
          SELECT t, 'pop-' || i, 'pop-' || i || '-scale', 'weight', 70 + (i % 40) + (d % 3) * 0.2, 'kg', t
          FROM generate_series(1, {patients}) i, generate_series(1, {days}) d,
               LATERAL (SELECT date_trunc('day', {now_sql}) - d * interval '1 day' + interval '7 hours' + (i % 3600) * interval '1 second' AS t) x;
        INSERT INTO observations (time, patient_id, device_id, metric, value, unit, received_at)
          SELECT t, 'pop-' || i, 'pop-' || i || '-bp_cuff', m.metric, m.v + (i % 10), m.unit, t
          FROM generate_series(1, {patients}) i, generate_series(1, {days}) d,
               (VALUES ('sys', 125.0, 'mm[Hg]'), ('dia', 78.0, 'mm[Hg]'), ('hr', 66.0, 'beat/min')) m(metric, v, unit),
               LATERAL (SELECT date_trunc('day', {now_sql}) - d * interval '1 day' + interval '7 hours 5 minutes' + (i % 3600) * interval '1 second' AS t) x;
        ANALYZE;
        """
        log(f"population: writing {patients} patients x {days} days")
        started = time.time()
        subprocess.run(["psql", db.url, "-q", "-v", "ON_ERROR_STOP=1"], input=sql, text=True,
                       check=True, stdout=subprocess.DEVNULL)
        log(f"population: written in {time.time() - started:.0f} s; starting vaka")
        started = time.time()
        vaka = Vaka(db, broker)
        ready = time.time() - started
        time.sleep(2)
        result = {
            "patients": patients,
            "days": days,
            "rows": patients * days * 4,
            "startup_secs": ready,
            "vaka_rss_kib": vaka.rss(),
            "vaka_hwm_kib": vaka.rss("VmHWM"),
        }
        vaka.stop()
        return result
    finally:
        db.drop()


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for backend, style in (("pg", "o-"), ("sqlite", "s--")):
        runs = results.get("backends", {}).get(backend, {}).get("runs", [])
        if not runs:
            continue
        runs = sorted(runs, key=lambda r: r["publish_rate"])
        x = [r["publish_rate"] for r in runs]
        name = "PostgreSQL" if backend == "pg" else "SQLite"
        ax1.plot(x, [r["ingest_rate"] for r in runs], style, label=f"vaka stored ({name})")
        ax2.plot(x, [r["alert_latency"]["p99_ms"] for r in runs], style,
                 label=f"publish→alert p99 ({name})")
        ax2.plot(x, [r["stored_latency"]["p99_ms"] for r in runs], style, alpha=0.5,
                 label=f"publish→stored p99 ({name})")
        db = results["backends"][backend].get("database")
        if db:
            ax1.axhline(db["messages_per_sec"], linestyle=":", color="gray")
            # PostgreSQL's label above its line, SQLite's below: the two
            # baselines are often close.
            ax1.annotate(f"{db['method']} ({name}) {db['messages_per_sec']:.0f} msg/s",
                         (x[-1], db["messages_per_sec"]), fontsize=7, color="gray", ha="right",
                         va="bottom" if backend == "pg" else "top")
    offered = [r["publish_rate"] for b in results.get("backends", {}).values() for r in b.get("runs", [])]
    left = min(offered) if offered else 0
    for qos, color in (("1", "tab:red"), ("0", "tab:purple")):
        b = results.get("broker", {}).get(qos)
        if b:
            ax1.axhline(b["rate"], linestyle="-.", color=color, alpha=0.6)
            ax1.annotate(f"raw broker QoS {qos} {b['rate']:.0f} msg/s", (left, b["rate"]),
                         fontsize=7, color=color, va="bottom")
    ax1.set_xlabel("offered load (messages/s published)")
    ax1.set_ylabel("messages/s stored")
    ax1.set_title("Throughput")
    ax1.legend(fontsize=7)
    ax2.set_xlabel("offered load (messages/s published)")
    ax2.set_ylabel("latency p99 (ms)")
    ax2.set_yscale("log")
    ax2.axhline(100, linestyle=":", color="gray")
    ax2.set_title("Latency (p99)")
    ax2.legend(fontsize=7)
    fig.suptitle(f"vaka system load, {results['machine']}, {results['date']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def summary(results):
    lines = []
    b1 = results["broker"].get("1", {}).get("rate")
    b0 = results["broker"].get("0", {}).get("rate")
    lines.append(f"raw broker: QoS 1 {b1:.0f} msg/s, QoS 0 {b0:.0f} msg/s "
                 f"({results['broker']['1']['payload_bytes']} B payload)")
    for backend, r in results["backends"].items():
        mx = r["max"]
        db = r.get("database", {})
        lines.append(f"[{backend}] max sustained ingest {mx['ingest_rate']:.0f} msg/s (offered "
                     f"{mx['offered_rate']:.0f}) = {mx['ingest_rate'] / b1:.0%} of raw broker QoS 1, "
                     f"{mx['ingest_rate'] / db.get('messages_per_sec', float('nan')):.0%} of raw "
                     f"{db.get('method')} ({db.get('messages_per_sec', 0):.0f} msg/s); "
                     f"stored {mx['stored_rows']}/{mx['expected_rows']} rows")
        for run in sorted(r["runs"], key=lambda x: x["publish_rate"]):
            kind = (f"{run['fraction_of_max']:.0%} of max" if "fraction_of_max" in run
                    else "ramp, sustained" if run.get("sustained") else "ramp, NOT sustained")
            lines.append(
                f"[{backend}]   offered {run['offered_rate'] or 0:>7.0f} published {run['publish_rate']:>7.0f}"
                f" stored {run['ingest_rate']:>7.0f} msg/s; alert p50 {run['alert_latency']['p50_ms']:.1f}"
                f" p99 {run['alert_latency']['p99_ms']:.1f} p99.9 {run['alert_latency']['p999_ms']:.1f}"
                f" max {run['alert_latency']['max_ms']:.1f} ms; stored p99 {run['stored_latency']['p99_ms']:.1f} ms;"
                f" drained {run['drain_secs'] - run['publish_secs']:.1f} s after the last publish;"
                f" {'clean' if run['exit_code'] == 0 else 'LOSS/DUPLICATES'} ({kind})")
    if "devices_10k" in results:
        m = results["devices_10k"]
        per = (m["vaka_rss_kib"] - m["vaka_rss_idle_kib"]) * 1024 / m["devices"]
        lines.append(f"{m['devices']} devices: vaka RSS {m['vaka_rss_kib'] / 1024:.0f} MiB "
                     f"({per / 1024:.1f} KiB per device over idle); the broker holding them "
                     f"{m['mosquitto_rss_kib'] / 1024:.0f} MiB; "
                     f"{'clean' if m['exit_code'] == 0 else 'LOSS/DUPLICATES'}")
    if "population" in results:
        p = results["population"]
        lines.append(f"{p['patients']} patients x {p['days']} days ({p['rows']} rows): vaka RSS "
                     f"{p['vaka_rss_kib'] / 1024:.0f} MiB, peak {p['vaka_hwm_kib'] / 1024:.0f} MiB "
                     f"(ready in {p['startup_secs']:.0f} s)")
    return "\n".join(lines)


def sustained(run):
    """A load vaka kept up with: nothing lost, the offered rate published,
    everything stored within a second of the last publish, and alerts in
    under a second."""
    return (run["exit_code"] == 0
            and run["publish_rate"] >= 0.97 * (run["offered_rate"] or 0)
            and run["drain_secs"] <= run["publish_secs"] + 1.0
            and run["alert_latency"]["p99_ms"] < 1000)


def ramp(backend, broker, args, tmp):
    """Offered load raised step by step (x args.step) until vaka no longer
    keeps up; returns every step and the highest sustained one."""
    runs, best = [], None
    rate = args.ramp_start if backend == "pg" else args.ramp_start / 4
    while True:
        log(f"[{backend}] ramp: {rate:.0f} msg/s offered, {args.devices} devices, {args.secs} s")
        r = load_run(backend, broker, args.devices, round(rate), args.secs, tmp, f"ramp-{rate:.0f}")
        r["sustained"] = sustained(r)
        runs.append(r)
        if not r["sustained"]:
            break
        best = r
        rate *= args.step
    return runs, best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a short smoke run")
    ap.add_argument("--only", choices=["pg", "sqlite"], help="one backend")
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--secs", type=float, default=10, help="seconds of publishing per run")
    ap.add_argument("--ramp-start", type=float, default=8000,
                    help="first offered rate of the ramp, msg/s (SQLite: a quarter)")
    ap.add_argument("--step", type=float, default=1.2, help="factor between the ramp's steps")
    ap.add_argument("--fractions", default="0.25,0.5,0.9",
                    help="latency runs at these fractions of the maximum sustained rate")
    ap.add_argument("--no-memory", action="store_true", help="skip the 10k-device and 100k-patient runs")
    ap.add_argument("--population", type=int, default=100_000)
    ap.add_argument("--out", default=str(ROOT / "bench-results"))
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    try:
        import matplotlib  # noqa: F401  (the plot comes last: fail before measuring)
    except ImportError:
        sys.exit("bench.py: the plot needs matplotlib: pip install matplotlib")
    if args.quick:
        args.secs, args.fractions, args.step = 5, "0.5", 1.5
        args.devices = min(args.devices, 300)
        args.population = min(args.population, 10_000)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "-p", "vaka-hub", "--bin", "vaka",
                        "-p", "vaka-sim", "--bin", "vaka-sim"], check=True, cwd=ROOT)
    limit = raise_fd_limit()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} vCPU {cpu}",
        "command": " ".join(sys.argv),
        "fd_limit": limit,
        "broker": {},
        "backends": {},
    }
    broker = Broker()
    tmp = tempfile.mkdtemp(prefix="vaka-bench-json-")
    try:
        messages = 40_000 if args.quick else 300_000
        for qos in ("1", "0"):
            log(f"baseline: broker QoS {qos}")
            b, _ = sim(["baseline", "broker", "--mqtt-url", broker.url, "--qos", qos,
                        "--messages", str(messages), "--publishers", str(args.devices)],
                       Path(tmp) / f"broker-{qos}.json")
            results["broker"][qos] = b
        for backend in ([args.only] if args.only else ["pg", "sqlite"]):
            steps, mx = ramp(backend, broker, args, tmp)
            if mx is None:
                raise RuntimeError(f"[{backend}] not even the ramp's first step was sustained; "
                                   "lower --ramp-start")
            runs = list(steps)
            for f in [float(x) for x in args.fractions.split(",") if x]:
                rate = round(mx["offered_rate"] * f)
                log(f"[{backend}] vaka at {f:.0%} of the maximum sustained rate: {rate} msg/s")
                r = load_run(backend, broker, args.devices, rate, args.secs, tmp, f"{f}")
                r["fraction_of_max"] = f
                runs.append(r)
            log(f"[{backend}] baseline: database, {mx['expected_rows']} rows")
            db = Database(backend)
            try:
                d, _ = sim(["baseline", "database", "--database-url", db.url,
                            "--rows", str(max(mx["expected_rows"], 1000)), "--devices", str(args.devices)],
                           Path(tmp) / f"db-{backend}.json")
            finally:
                db.drop()
            results["backends"][backend] = {"max": mx, "runs": runs, "database": d}
            (out / "results.json").write_text(json.dumps(results, indent=2))
        if not args.no_memory:
            n = 2_000 if args.quick else 10_000
            log(f"memory: {n} devices")
            results["devices_10k"] = load_run("pg", broker, n, 2000, args.secs, tmp, "10k")
            log(f"memory: {args.population} patients")
            results["population"] = population(args.population, 14, broker, tmp)
    finally:
        broker.stop()
    (out / "results.json").write_text(json.dumps(results, indent=2))
    text = summary(results)
    (out / "summary.txt").write_text(text + "\n")
    plot(results, out / "load.png")
    print(text)


if __name__ == "__main__":
    main()
