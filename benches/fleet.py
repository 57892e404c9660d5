#!/usr/bin/env python3
"""Fleet benchmark: how fast a change reaches every replica, and what the
fleet costs etcd.

Starts a throwaway etcd on loopback (benches/etcd_local.py), two harness
backends and --replicas replicas of the fleet build (one worker each, all
on one prefix, `[proxy] revision_header` on), then:

1. Idle: --idle-secs with no changes; etcd's put and txn counters over that
   window give the writes per second each replica costs at rest.
2. Propagation: --changes compare-and-set weight changes through replica
   0's admin API (If-Match, as deploy tooling does), one at a time. From
   the moment the write's 200 is read, one thread per replica polls that
   replica's data port until a response carries `x-switchyard-revision` at
   or past the new revision, i.e. the change is being served there. Reports
   p50/p99 over every (change, replica) and over each change's slowest
   replica, and etcd's writes and bytes per change.
3. The keys under the prefix by kind (table, members, history, stats, ...)
   with their sizes.

    cargo build --release --features fleet
    python3 benches/fleet.py [--replicas 10] [--changes 200] [--idle-secs 20]

Everything runs on 127.0.0.1 and is stopped by PID at the end.
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
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.environ.get("BENCH_DIR", os.path.join(os.path.dirname(REPO), "shared", "bench"))
sys.path.insert(0, BENCH)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (the harness: process handling)
import etcd_local  # noqa: E402

BIN = os.environ.get("CANDIDATE_BIN", os.path.join(REPO, "target", "release", "switchyard"))
HOST = "127.0.0.1"


def replica_config(i, ports, etcd_url, prefix, backends):
    return f"""[listen]
data = "{HOST}:{ports['data']}"
admin = "{HOST}:{ports['admin']}"

[proxy]
revision_header = true

[cluster]
etcd = ["{etcd_url}"]
prefix = "{prefix}"
name = "replica-{i}"

[[routes]]
name = "web"
  [[routes.versions]]
  name = "stable"
  weight = 90
  endpoints = ["{HOST}:{backends['stable']}"]
  [[routes.versions]]
  name = "canary"
  weight = 10
  endpoints = ["{HOST}:{backends['canary']}"]
"""


def admin_get(port, path):
    with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=5) as r:
        return r.status, r.headers, r.read().decode()


def revision(port):
    _, headers, _ = admin_get(port, "/api/v1/routes")
    return int(headers["ETag"].strip('"'))


class Poller(threading.Thread):
    """Polls one replica's data port for each target revision it is given."""

    def __init__(self, index, port, board):
        super().__init__(daemon=True)
        self.index, self.port, self.board = index, port, board
        self.conn = http.client.HTTPConnection(HOST, port, timeout=5)

    def serving(self):
        self.conn.request("GET", "/")
        resp = self.conn.getresponse()
        resp.read()
        return int(resp.getheader("x-switchyard-revision", "0"))

    def run(self):
        seen = 0
        while True:
            with self.board.cond:
                while self.board.round == seen and not self.board.stop:
                    self.board.cond.wait()
                if self.board.stop:
                    return
                seen, target, t0, deadline = (self.board.round, self.board.target,
                                              self.board.t0, self.board.deadline)
            latency = None
            while time.monotonic() < deadline:
                if self.serving() >= target:
                    latency = time.monotonic() - t0
                    break
                time.sleep(0.0005)
            with self.board.cond:
                self.board.results[self.index] = latency
                self.board.answers += 1
                self.board.cond.notify_all()


class Board:
    """What the pollers are told (the round's target revision, when its 200
    was read) and what they answer (seconds per replica, None: not within
    the deadline)."""

    def __init__(self, replicas):
        self.cond = threading.Condition()
        self.round, self.target, self.t0, self.deadline = 0, 0, 0.0, 0.0
        self.results = [None] * replicas
        self.answers = 0
        self.stop = False


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def etcd_writes(before, after):
    keys = ("etcd_mvcc_put_total", "etcd_mvcc_txn_total", "etcd_mvcc_delete_total",
            "etcd_debugging_mvcc_total_put_size_in_bytes")
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in keys}


def key_kind(prefix, key):
    rest = key[len(prefix) + 1:]
    return rest.split("/", 1)[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replicas", type=int, default=10)
    ap.add_argument("--changes", type=int, default=200)
    ap.add_argument("--idle-secs", type=int, default=20)
    ap.add_argument("--gap-ms", type=int, default=50, help="pause between changes once all replicas serve one")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds a replica may take before it counts as a miss")
    args = ap.parse_args()
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} missing: cargo build --release --features fleet")
    if not os.path.exists(compare.BACKEND_BIN):
        sys.exit(f"{compare.BACKEND_BIN} missing: run {BENCH}/setup.sh")

    rundir = tempfile.mkdtemp(prefix="switchyard-fleet-")
    prefix = f"/switchyard/bench-{os.getpid()}"
    started = []
    try:
        client_port, peer_port = etcd_local.free_port(), etcd_local.free_port()
        etcd_url = f"http://{HOST}:{client_port}"
        started.append(compare.Started("etcd", etcd_local.argv(os.path.join(rundir, "etcd"), client_port, peer_port),
                                       logfile=os.path.join(rundir, "etcd.log")))
        if not etcd_local.wait_healthy(etcd_url):
            sys.exit(f"etcd never became healthy (see {rundir}/etcd.log)")
        backends = {name: etcd_local.free_port() for name in ("stable", "canary")}
        for name, port in backends.items():
            started.append(compare.Started(f"backend-{name}", [compare.BACKEND_BIN, "--port", str(port), "--name", name]))
        replicas = []
        env = dict(os.environ, SWITCHYARD_LOG="warn")
        for i in range(args.replicas):
            ports = {"data": etcd_local.free_port(), "admin": etcd_local.free_port()}
            config = os.path.join(rundir, f"replica-{i}.toml")
            with open(config, "w") as f:
                f.write(replica_config(i, ports, etcd_url, prefix, backends))
            started.append(compare.Started(f"replica-{i}", [BIN, "run", "--workers", "1", "--no-watch", "--config", config],
                                           env=env, logfile=os.path.join(rundir, f"replica-{i}.log")))
            replicas.append(ports)
        for port in list(backends.values()) + [p for r in replicas for p in r.values()]:
            if not compare.wait_port(port, None, 20):
                sys.exit(f"port {port} never came up (see {rundir})")
        deadline = time.time() + 30
        while True:
            ready = [admin_get(r["admin"], "/readyz")[2] for r in replicas]
            revisions = {revision(r["admin"]) for r in replicas}
            if all("cluster: connected" in text for text in ready) and len(revisions) == 1:
                break
            if time.time() > deadline:
                sys.exit(f"replicas never agreed (revisions {revisions}; see {rundir})")
            time.sleep(0.2)
        print(f"{args.replicas} replicas connected at revision {revisions.pop()}", file=sys.stderr)

        # 1. Idle: what the fleet writes with nothing changing.
        time.sleep(2)
        before = etcd_local.metrics(etcd_url)
        time.sleep(args.idle_secs)
        idle = etcd_writes(before, etcd_local.metrics(etcd_url))

        # 2. Propagation.
        board = Board(args.replicas)
        pollers = [Poller(i, r["data"], board) for i, r in enumerate(replicas)]
        for p in pollers:
            p.start()
        writer = http.client.HTTPConnection(HOST, replicas[0]["admin"], timeout=10)
        current = revision(replicas[0]["admin"])
        per_replica, slowest, misses, refused = [], [], 0, 0
        before = etcd_local.metrics(etcd_url)
        for n in range(args.changes):
            canary = 20 if n % 2 == 0 else 10
            body = json.dumps({"stable": 100 - canary, "canary": canary})
            writer.request("PUT", "/api/v1/routes/web/weights", body=body, headers={"If-Match": f'"{current}"'})
            resp = writer.getresponse()
            data = resp.read()
            t0 = time.monotonic()
            if resp.status != 200:
                refused += 1
                print(f"change {n} refused: {resp.status} {data[:200]!r}", file=sys.stderr)
                current = revision(replicas[0]["admin"])
                continue
            current = int(resp.getheader("ETag").strip('"'))
            with board.cond:
                board.round += 1
                board.target, board.t0, board.deadline = current, t0, t0 + args.timeout
                board.results = [None] * args.replicas
                board.answers = 0
                board.cond.notify_all()
                # Each poller answers once per round, by its deadline.
                while board.answers < args.replicas and time.monotonic() < t0 + args.timeout + 10:
                    board.cond.wait(1)
                results = list(board.results)
            got = [r for r in results if r is not None]
            misses += args.replicas - len(got)
            per_replica.extend(got)
            if len(got) == args.replicas:
                slowest.append(max(got))
            time.sleep(args.gap_ms / 1000)
        changes = etcd_writes(before, etcd_local.metrics(etcd_url))
        with board.cond:
            board.stop = True
            board.cond.notify_all()

        # 3. The keys.
        kinds = {}
        for key, size in etcd_local.keys(etcd_url, prefix + "/"):
            kind = key_kind(prefix, key)
            count, total, largest = kinds.get(kind, (0, 0, 0))
            kinds[kind] = (count + 1, total + size, max(largest, size))
        db = etcd_local.metrics(etcd_url)

        ms = [x * 1000 for x in per_replica]
        ms_slowest = [x * 1000 for x in slowest]
        applied = args.changes - refused
        print(f"propagation over {applied} changes x {args.replicas} replicas ({len(ms)} samples, {misses} not "
              f"within {args.timeout:.0f} s): p50 {pct(ms, 50):.1f} ms, p99 {pct(ms, 99):.1f} ms, max {max(ms):.1f} ms; "
              f"slowest replica per change: p50 {pct(ms_slowest, 50):.1f} ms, p99 {pct(ms_slowest, 99):.1f} ms; "
              f"mean {statistics.mean(ms):.1f} ms")
        n = args.replicas
        print(f"etcd at rest ({args.idle_secs} s): {idle['etcd_mvcc_put_total'] / args.idle_secs / n:.2f} puts/s and "
              f"{idle['etcd_debugging_mvcc_total_put_size_in_bytes'] / args.idle_secs / n:.0f} B/s per replica, "
              f"txns {idle['etcd_mvcc_txn_total']:.0f}")
        if applied:
            print(f"etcd per change ({applied} changes, {n} replicas): {changes['etcd_mvcc_put_total'] / applied:.1f} puts, "
                  f"{changes['etcd_mvcc_txn_total'] / applied:.1f} txns, {changes['etcd_mvcc_delete_total'] / applied:.1f} "
                  f"deletes, {changes['etcd_debugging_mvcc_total_put_size_in_bytes'] / applied:.0f} B put")
        for kind, (count, total, largest) in sorted(kinds.items()):
            print(f"keys {prefix}/{kind}: {count}, {total} B in all, largest {largest} B")
        if "stats" not in kinds:
            print(f"keys {prefix}/stats: none (this build publishes no histograms)")
        print(f"etcd db {db.get('etcd_mvcc_db_total_size_in_bytes', 0) / 1024:.0f} KiB "
              f"({db.get('etcd_mvcc_db_total_size_in_use_in_bytes', 0) / 1024:.0f} KiB in use), "
              f"refused changes {refused}")
        return 0 if refused == 0 and misses == 0 else 1
    finally:
        for proc in reversed(started):
            proc.stop()


if __name__ == "__main__":
    sys.exit(main())
