#!/usr/bin/env python3
"""Weight churn benchmark: does changing weights cost throughput?

Runs the shared harness's saturation load (wrk -t1 -c64 with its report
script, proxy and load pinned to their own CPUs, the harness's backend)
through switchyard twice in one invocation, alternating: once quiet, once
while this script sends 100 weight changes per second through the admin API
(compare-and-set with If-Match, as deploy tooling does). Reports requests/s
of both, the drop, wrk errors and the changes made. Bounded: --reps x 2 runs
of --secs seconds.

With --fleet the proxy is a fleet replica: a throwaway etcd on loopback
(benches/etcd_local.py) and a second replica (on the load CPU) whose admin
API takes the changes; the measured proxy applies each one from etcd's
watch, as every replica of a fleet does (needs the fleet build:
cargo build --release --features fleet).

With --no-load there is no wrk: the changes alone, for --secs, and the
proxy's CPU time per change it applied (utime + stime), a figure a busy host
barely moves.

    python3 benches/weight_churn.py [--secs 5] [--reps 12] [--fleet] [--no-load]
"""
import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.environ.get("BENCH_DIR", os.path.join(os.path.dirname(REPO), "shared", "bench"))
sys.path.insert(0, BENCH)
import compare  # noqa: E402  (the harness: process handling, wrk runner)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import etcd_local  # noqa: E402

BIN = os.environ.get("CANDIDATE_BIN", os.path.join(REPO, "target", "release", "switchyard"))
PORTS = {"stable": 19301, "canary": 19302, "proxy": 19380, "admin": 19390,
         "writer": 19381, "writer_admin": 19391}


def churn(stop, rate, counts, cpu, shares, admin_port):
    """Alternate the canary between two shares at `rate` changes per second,
    from the load generator's CPU (this thread only): the figure is what
    the changes cost the proxy, not what Python costs its core."""
    os.sched_setaffinity(0, {int(c) for c in cpu.split(",")})
    conn = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=5)
    conn.request("GET", "/api/v1/routes")
    resp = conn.getresponse()
    revision = resp.getheader("ETag")
    resp.read()
    interval = 1.0 / rate
    next_at = time.monotonic()
    flip = False
    while not stop.is_set():
        flip = not flip
        canary = shares[0] if flip else shares[1]
        body = json.dumps({"stable": 100 - canary, "canary": canary})
        conn.request("PUT", "/api/v1/routes/web/weights", body=body, headers={"If-Match": revision})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status == 200:
            counts["ok"] += 1
            revision = resp.getheader("ETag")
        else:
            counts["failed"] += 1
            print(f"change refused: {resp.status} {data[:200]!r}", file=sys.stderr)
            # As deploy tooling does: read the table again, then go on from
            # the revision it is at (a timed-out write may have landed).
            conn.request("GET", "/api/v1/routes")
            resp = conn.getresponse()
            resp.read()
            revision = resp.getheader("ETag")
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--secs", type=int, default=5)
    ap.add_argument("--reps", type=int, default=12)
    ap.add_argument("--rate", type=int, default=100, help="weight changes per second")
    ap.add_argument("--proxy-cpu", default="1")
    ap.add_argument("--load-cpu", default="0")
    ap.add_argument("--canary", default="9,11",
                    help="the two canary shares (%%) the changes alternate between; the quiet runs "
                         "use 10. Shares around 10 keep the traffic mix of both runs the same, so "
                         "the difference is the cost of changing (10,20 also measures the cost of "
                         "a busier canary)")
    ap.add_argument("--fleet", action="store_true",
                    help="the proxy as a fleet replica; the changes go through a second replica's admin API")
    ap.add_argument("--no-load", action="store_true",
                    help="no wrk: report the proxy's CPU time per change applied")
    args = ap.parse_args()
    shares = [int(x) for x in args.canary.split(",")]
    if len(shares) != 2 or not all(0 <= x <= 100 for x in shares):
        sys.exit("--canary takes two shares from 0 to 100, e.g. 9,11")
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} missing: cargo build --release -p switchyard-control")
    if not os.path.exists(compare.BACKEND_BIN):
        sys.exit(f"{compare.BACKEND_BIN} missing: run {BENCH}/setup.sh")

    rundir = tempfile.mkdtemp(prefix="switchyard-churn-")
    started = []
    cluster = ""
    if args.fleet:
        client_port, peer_port = etcd_local.free_port(), etcd_local.free_port()
        etcd_url = f"http://127.0.0.1:{client_port}"
        argv = ["taskset", "-c", args.load_cpu] + etcd_local.argv(os.path.join(rundir, "etcd"), client_port, peer_port)
        started.append(compare.Started("etcd", argv, logfile=os.path.join(rundir, "etcd.log")))
        if not etcd_local.wait_healthy(etcd_url):
            stop_all(started)
            sys.exit(f"etcd never became healthy (see {rundir}/etcd.log)")
        cluster = f'[cluster]\netcd = ["{etcd_url}"]\nprefix = "/switchyard/churn-{os.getpid()}"\n'

    def config_file(name, data, admin):
        path = os.path.join(rundir, f"{name}.toml")
        section = cluster + f'name = "{name}"\n' if cluster else ""
        with open(path, "w") as f:
            f.write(f"""[listen]
data = "127.0.0.1:{data}"
admin = "127.0.0.1:{admin}"

{section}
[[routes]]
name = "web"
  [[routes.versions]]
  name = "stable"
  weight = 90
  endpoints = ["127.0.0.1:{PORTS['stable']}"]
  [[routes.versions]]
  name = "canary"
  weight = 10
  endpoints = ["127.0.0.1:{PORTS['canary']}"]
""")
        return path

    config = config_file("switchyard", PORTS["proxy"], PORTS["admin"])
    writes_to = PORTS["admin"]
    try:
        for name in ("stable", "canary"):
            argv = ["taskset", "-c", args.load_cpu, compare.BACKEND_BIN, "--port", str(PORTS[name]), "--name", name]
            started.append(compare.Started(f"backend-{name}", argv))
        env = dict(os.environ, SWITCHYARD_LOG="warn")
        proxy = compare.Started("switchyard", ["taskset", "-c", args.proxy_cpu, BIN, "run", "--workers", "1",
                                               "--no-watch", "--config", config], env=env,
                                logfile=os.path.join(rundir, "switchyard.log"))
        started.append(proxy)
        ports = [PORTS["stable"], PORTS["canary"], PORTS["proxy"], PORTS["admin"]]
        if args.fleet:
            writer = config_file("writer", PORTS["writer"], PORTS["writer_admin"])
            started.append(compare.Started("writer", ["taskset", "-c", args.load_cpu, BIN, "run", "--workers", "1",
                                                      "--no-watch", "--config", writer], env=env,
                                           logfile=os.path.join(rundir, "writer.log")))
            ports += [PORTS["writer"], PORTS["writer_admin"]]
            writes_to = PORTS["writer_admin"]
        for port in ports:
            if not compare.wait_port(port, None, 15):
                sys.exit(f"port {port} never came up (see {rundir})")
        if args.fleet and not wait_connected([PORTS["admin"], PORTS["writer_admin"]]):
            sys.exit(f"the replicas never joined the fleet (see {rundir})")
        if args.no_load:
            return cpu_per_change(args, proxy, shares, writes_to)
        compare.run_wrk(args.load_cpu, PORTS["proxy"], 64, 2, "/")  # warm-up
        quiet, churned, errors, changes = [], [], 0, {"ok": 0, "failed": 0}
        cpu = {"quiet": [], "churn": []}
        for rep in range(args.reps):
            # Alternate which comes first, so drift of a shared machine
            # does not always favour the same side.
            for mode in (("quiet", "churn") if rep % 2 == 0 else ("churn", "quiet")):
                stop = threading.Event()
                worker = None
                if mode == "churn":
                    worker = threading.Thread(target=churn, args=(stop, args.rate, changes, args.load_cpu, shares, writes_to),
                                              daemon=True)
                    worker.start()
                before = cpu_seconds(proxy.pid)
                result = compare.run_wrk(args.load_cpu, PORTS["proxy"], 64, args.secs, "/")
                used = cpu_seconds(proxy.pid) - before
                stop.set()
                cpu[mode].append(used / max(result["requests"], 1) * 1e6)
                if worker:
                    worker.join(10)
                errors += result["errors"]
                (quiet if mode == "quiet" else churned).append(result["rps"])
                print(f"rep {rep + 1} {mode:5}: {result['rps']:9.0f} req/s, errors {result['errors']}, "
                      f"proxy {cpu[mode][-1]:.1f} us CPU/request", file=sys.stderr)
        q, c = statistics.median(quiet), statistics.median(churned)
        # Each rep is a pair run back to back: the median of the pairs'
        # drops is steadier than the drop between the two medians.
        pair_drops = [(a - b) / a * 100 for a, b in zip(quiet, churned) if a]
        drop = statistics.median(pair_drops) if pair_drops else 0.0
        cq, cc = statistics.median(cpu["quiet"]), statistics.median(cpu["churn"])
        # What the measured proxy serves now: in a fleet, every change made
        # through the writer must have reached it.
        time.sleep(1)
        followed, behind = "", 0
        if args.fleet:
            behind = revision(writes_to) - revision(PORTS["admin"])
            followed = f", measured replica {'caught up' if behind == 0 else f'{behind} revisions behind'}"
        print(f"weight churn ({args.rate}/s): quiet {q:.0f} req/s, churning {c:.0f} req/s, "
              f"drop {drop:.2f} % (median of {len(pair_drops)} back-to-back pairs, spread "
              f"{min(pair_drops, default=0):+.1f} .. {max(pair_drops, default=0):+.1f} %); proxy CPU "
              f"{cq:.1f} vs {cc:.1f} us/request ({(cc - cq) / cq * 100:+.1f} %); "
              f"wrk errors {errors}, changes applied {changes['ok']}, refused {changes['failed']}{followed}")
        return 0 if errors == 0 and changes["failed"] == 0 and behind == 0 else 1
    finally:
        stop_all(started)


def cpu_per_change(args, proxy, shares, writes_to):
    """Changes at --rate for --secs, no traffic: the proxy's CPU per change."""
    stop, counts = threading.Event(), {"ok": 0, "failed": 0}
    before = cpu_seconds(proxy.pid)
    worker = threading.Thread(target=churn, args=(stop, args.rate, counts, args.load_cpu, shares, writes_to),
                              daemon=True)
    worker.start()
    time.sleep(args.secs)
    stop.set()
    worker.join(10)
    time.sleep(1)  # the last changes reach a fleet replica through the watch
    used = cpu_seconds(proxy.pid) - before
    print(f"{counts['ok']} changes in {args.secs} s ({counts['failed']} refused): proxy CPU "
          f"{used / max(counts['ok'], 1) * 1e6:.0f} us per change, {used / args.secs * 100:.2f} % of a core")
    return 0 if counts["failed"] == 0 else 1


def stop_all(started):
    for proc in reversed(started):
        proc.stop()


def revision(admin_port):
    conn = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=5)
    conn.request("GET", "/api/v1/routes")
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return int(resp.getheader("ETag").strip('"'))


def wait_connected(admin_ports, timeout=30):
    """Whether every replica reports `cluster: connected` and serves the
    same revision within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = []
        for port in admin_ports:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/readyz")
            ready.append(b"cluster: connected" in conn.getresponse().read())
            conn.close()
        if all(ready) and len({revision(p) for p in admin_ports}) == 1:
            return True
        time.sleep(0.2)
    return False


if __name__ == "__main__":
    sys.exit(main())
