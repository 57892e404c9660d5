#!/usr/bin/env python3
"""Weight churn benchmark: does changing weights cost throughput?

Runs the shared harness's saturation load (wrk -t1 -c64 with its report
script, proxy and load pinned to their own CPUs, the harness's backend)
through switchyard twice in one invocation, alternating: once quiet, once
while this script sends 100 weight changes per second through the admin API
(compare-and-set with If-Match, as deploy tooling does). Reports requests/s
of both, the drop, wrk errors and the changes made. Bounded: --reps x 2 runs
of --secs seconds.

    python3 benches/weight_churn.py [--secs 5] [--reps 12]
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

BIN = os.environ.get("CANDIDATE_BIN", os.path.join(REPO, "target", "release", "switchyard"))
PORTS = {"stable": 19301, "canary": 19302, "proxy": 19380, "admin": 19390}


def churn(stop, rate, counts, cpu, shares):
    """Alternate the canary between two shares at `rate` changes per second,
    from the load generator's CPU (this thread only): the figure is what
    the changes cost the proxy, not what Python costs its core."""
    os.sched_setaffinity(0, {int(c) for c in cpu.split(",")})
    conn = http.client.HTTPConnection("127.0.0.1", PORTS["admin"], timeout=5)
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
    args = ap.parse_args()
    shares = [int(x) for x in args.canary.split(",")]
    if len(shares) != 2 or not all(0 <= x <= 100 for x in shares):
        sys.exit("--canary takes two shares from 0 to 100, e.g. 9,11")
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} missing: cargo build --release -p switchyard-control")
    if not os.path.exists(compare.BACKEND_BIN):
        sys.exit(f"{compare.BACKEND_BIN} missing: run {BENCH}/setup.sh")

    rundir = tempfile.mkdtemp(prefix="switchyard-churn-")
    config = os.path.join(rundir, "switchyard.toml")
    with open(config, "w") as f:
        f.write(f"""[listen]
data = "127.0.0.1:{PORTS['proxy']}"
admin = "127.0.0.1:{PORTS['admin']}"

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
    started = []
    try:
        for name in ("stable", "canary"):
            argv = ["taskset", "-c", args.load_cpu, compare.BACKEND_BIN, "--port", str(PORTS[name]), "--name", name]
            started.append(compare.Started(f"backend-{name}", argv))
        env = dict(os.environ, SWITCHYARD_LOG="warn")
        proxy = compare.Started("switchyard", ["taskset", "-c", args.proxy_cpu, BIN, "run", "--workers", "1",
                                               "--no-watch", "--config", config], env=env,
                                logfile=os.path.join(rundir, "switchyard.log"))
        started.append(proxy)
        for port in (PORTS["stable"], PORTS["canary"], PORTS["proxy"], PORTS["admin"]):
            if not compare.wait_port(port, None, 15):
                sys.exit(f"port {port} never came up (see {rundir})")
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
                    worker = threading.Thread(target=churn, args=(stop, args.rate, changes, args.load_cpu, shares), daemon=True)
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
        print(f"weight churn ({args.rate}/s): quiet {q:.0f} req/s, churning {c:.0f} req/s, "
              f"drop {drop:.2f} % (median of {len(pair_drops)} back-to-back pairs, spread "
              f"{min(pair_drops, default=0):+.1f} .. {max(pair_drops, default=0):+.1f} %); proxy CPU "
              f"{cq:.1f} vs {cc:.1f} us/request ({(cc - cq) / cq * 100:+.1f} %); "
              f"wrk errors {errors}, changes applied {changes['ok']}, refused {changes['failed']}")
        return 0 if errors == 0 and changes["failed"] == 0 else 1
    finally:
        for proc in reversed(started):
            proc.stop()


if __name__ == "__main__":
    sys.exit(main())
