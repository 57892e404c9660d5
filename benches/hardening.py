#!/usr/bin/env python3
"""Hardening figures, switchyard and nginx side by side in one run.

Run through benches/hardening.sh (which raises the fd limit and checks the
binaries). Three figures per proxy, each bounded in time:

  conns   10,000 concurrent keep-alive connections held open (each has
          answered one request); meanwhile a new request on a new connection
          is timed (p50/p99 of --probes requests) against the same probe with
          no connections held; at the end every held connection must still
          answer.
  soak    --soak-secs at about half of saturation (wrk with a per-request
          delay, rate measured first with wrk -c64), a weight change every
          second (switchyard: the admin API with If-Match; nginx: a new config
          and a reload, its only way) and a shadow that flaps (up --flap-secs,
          down --flap-secs). Sampled every 5 s: RSS (the proxy's processes
          together), open fds. Growth is measured after the warm-up (the first
          fifth of the run); 0 failed requests is wrk's errors + non-2xx.
  sigterm wrk -c64 at saturation; after 3 s the graceful stop signal
          (switchyard: SIGTERM; nginx: SIGQUIT, its graceful stop, as SIGTERM
          is its fast stop): failed requests by kind, new connections
          refused, and the time to exit against the drain limit.

Proxies and load are pinned to their own CPUs as in the shared harness
(../shared/bench), whose process handling, wrk runner and backend are used.
"""
import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.environ.get("BENCH_DIR", os.path.join(os.path.dirname(REPO), "shared", "bench"))
sys.path.insert(0, BENCH)
import compare  # noqa: E402  (the harness: Started, run_wrk, wait_port, BACKEND_BIN)

HOST = "127.0.0.1"
PORTS = {"stable": 19401, "canary": 19402, "shadow": 19403, "proxy": 19480, "admin": 19490}
DRAIN_SECS = 5
HELD = 10_000


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# proxies: each a config writer and a start, with one worker on --proxy-cpu
# --------------------------------------------------------------------------
class Switchyard:
    name = "switchyard"
    stop_signal = signal.SIGTERM

    def __init__(self, args, rundir):
        self.args, self.rundir = args, rundir
        self.proc = None
        self.revision = None

    def config(self, stable, canary, shadow):
        shadow_part = ""
        if shadow:
            shadow_part = (
                "\n  [[routes.shadows]]\n  name = \"shadow\"\n"
                f"  endpoints = [\"{HOST}:{PORTS['shadow']}\"]\n  percent = 100\n  timeout = \"1s\"\n"
            )
        return f"""# benches/hardening.py
[listen]
data = "{HOST}:{PORTS['proxy']}"
admin = "{HOST}:{PORTS['admin']}"

[timeouts]
drain = "{DRAIN_SECS}s"

[[routes]]
name = "web"
path_prefix = "/"
{shadow_part}
  [[routes.versions]]
  name = "stable"
  weight = {stable}
  endpoints = ["{HOST}:{PORTS['stable']}"]

  [[routes.versions]]
  name = "canary"
  weight = {canary}
  endpoints = ["{HOST}:{PORTS['canary']}"]
"""

    def start(self, shadow=False):
        path = os.path.join(self.rundir, "switchyard.toml")
        with open(path, "w") as f:
            f.write(self.config(90, 10, shadow))
        env = dict(os.environ, SWITCHYARD_LOG="warn")
        argv = ["taskset", "-c", self.args.proxy_cpu, self.args.switchyard_bin, "run",
                "--config", path, "--workers", "1", "--no-watch"]
        self.proc = compare.Started("switchyard", argv, env=env,
                                    logfile=os.path.join(self.rundir, "switchyard.log"))
        if not compare.wait_port(PORTS["proxy"], self.proc, 15):
            raise RuntimeError("switchyard did not listen")
        return self.proc

    def pids(self):
        return [self.proc.pid]

    def set_weights(self, stable, canary):
        conn = http.client.HTTPConnection(HOST, PORTS["admin"], timeout=5)
        try:
            if self.revision is None:
                conn.request("GET", "/api/v1/routes")
                resp = conn.getresponse()
                resp.read()
                self.revision = resp.getheader("ETag")
            body = json.dumps({"stable": stable, "canary": canary})
            conn.request("PUT", "/api/v1/routes/web/weights", body=body,
                         headers={"If-Match": self.revision})
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                self.revision = None
                return False
            self.revision = resp.getheader("ETag")
            return True
        finally:
            conn.close()


class Nginx:
    name = "nginx"
    # SIGTERM is nginx's fast stop (open requests cut); SIGQUIT its graceful one.
    stop_signal = signal.SIGQUIT

    def __init__(self, args, rundir):
        self.args, self.rundir = args, rundir
        self.proc = None
        self.path = os.path.join(rundir, "nginx.conf")

    def config(self, stable, canary, shadow):
        mirror = "mirror /__mirror;" if shadow else ""
        rd = self.rundir
        return f"""# benches/hardening.py
user root;
worker_processes 1;
daemon off;
master_process on;
pid {rd}/nginx.pid;
error_log {rd}/nginx-error.log warn;
worker_rlimit_nofile 19000;
worker_shutdown_timeout {DRAIN_SECS}s;
events {{ worker_connections 18000; }}
http {{
  access_log off;
  client_body_temp_path {rd}/tmp/body;
  proxy_temp_path {rd}/tmp/proxy;
  fastcgi_temp_path {rd}/tmp/fcgi;
  uwsgi_temp_path {rd}/tmp/uwsgi;
  scgi_temp_path {rd}/tmp/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 75s;
  upstream split {{
    server {HOST}:{PORTS['stable']} weight={max(stable, 1)}{' down' if stable == 0 else ''};
    server {HOST}:{PORTS['canary']} weight={max(canary, 1)}{' down' if canary == 0 else ''};
    keepalive 128; keepalive_requests 10000000;
  }}
  upstream shadow {{ server {HOST}:{PORTS['shadow']}; keepalive 128; }}
  server {{
    listen {HOST}:{PORTS['proxy']} backlog=4096;
    location / {{
      {mirror}
      proxy_pass http://split;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
    location = /__mirror {{
      internal;
      proxy_pass http://shadow$request_uri;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_connect_timeout 1s;
      proxy_read_timeout 1s;
    }}
  }}
}}
"""

    def start(self, shadow=False):
        os.makedirs(os.path.join(self.rundir, "tmp"), exist_ok=True)
        self.shadow = shadow
        with open(self.path, "w") as f:
            f.write(self.config(90, 10, shadow))
        argv = ["taskset", "-c", self.args.proxy_cpu, "nginx", "-c", self.path, "-p", self.rundir]
        self.proc = compare.Started("nginx", argv, logfile=os.path.join(self.rundir, "nginx.log"))
        if not compare.wait_port(PORTS["proxy"], self.proc, 15):
            raise RuntimeError("nginx did not listen")
        return self.proc

    def pids(self):
        return self.proc.tree() or [self.proc.pid]

    def set_weights(self, stable, canary):
        # Open-source nginx has no runtime weight API: a new config and a
        # reload (new workers; the old ones finish their requests).
        with open(self.path, "w") as f:
            f.write(self.config(stable, canary, self.shadow))
        os.kill(self.proc.pid, signal.SIGHUP)
        return True


PROXIES = {"switchyard": Switchyard, "nginx": Nginx}


# --------------------------------------------------------------------------
# measurements
# --------------------------------------------------------------------------
def rss_kib(pids):
    return sum(compare.status_kib(p, "VmRSS") for p in pids)


def fd_count(pids):
    total = 0
    for p in pids:
        try:
            total += len(os.listdir(f"/proc/{p}/fd"))
        except OSError:
            pass
    return total


def get(conn):
    conn.request("GET", "/", headers={"Host": "bench"})
    resp = conn.getresponse()
    resp.read()
    return resp.status


def probe_latency(n):
    """Seconds for each of n requests, each on a new connection."""
    out = []
    for _ in range(n):
        started = time.perf_counter()
        conn = http.client.HTTPConnection(HOST, PORTS["proxy"], timeout=5)
        try:
            status = get(conn)
        finally:
            conn.close()
        if status != 200:
            raise RuntimeError(f"probe answered {status}")
        out.append(time.perf_counter() - started)
    return out


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def conns_figure(args, proxy):
    """10,000 held keep-alive connections and a new request's latency."""
    proxy.start()
    try:
        probe_latency(50)  # warm-up
        before = probe_latency(args.probes)
        held, failed_open = [], 0
        opened_at = time.time()
        for _ in range(HELD):
            conn = http.client.HTTPConnection(HOST, PORTS["proxy"], timeout=10)
            try:
                if get(conn) == 200:
                    held.append(conn)
                    continue
            except OSError:
                pass
            failed_open += 1
            conn.close()
        open_secs = time.time() - opened_at
        rss = rss_kib(proxy.pids())
        during = probe_latency(args.probes)
        still = 0
        for conn in held:
            try:
                still += get(conn) == 200
            except (OSError, http.client.HTTPException):
                pass
        for conn in held:
            conn.close()
        return {
            "held": len(held), "failed_to_open": failed_open, "open_secs": round(open_secs, 1),
            "still_answering": still, "rss_mib_held": round(rss / 1024, 1),
            "probe_ms_before": {"p50": round(pct(before, 50) * 1e3, 3), "p99": round(pct(before, 99) * 1e3, 3)},
            "probe_ms_held": {"p50": round(pct(during, 50) * 1e3, 3), "p99": round(pct(during, 99) * 1e3, 3)},
        }
    finally:
        proxy.proc.stop()


def wrk_paced(args, conns, delay_ms, secs):
    """wrk with each connection waiting delay_ms between requests."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(f'dofile("{compare.WRK_LUA}")\nfunction delay() return {delay_ms} end\n')
        script = f.name
    try:
        saved = compare.WRK_LUA
        compare.WRK_LUA = script
        return compare.run_wrk(args.load_cpu, PORTS["proxy"], conns, secs, "/")
    finally:
        compare.WRK_LUA = saved
        os.unlink(script)


def flap(stop, args, rundir, counts):
    """The shadow backend up for --flap-secs, down for --flap-secs, until stop."""
    argv = ["taskset", "-c", args.load_cpu, compare.BACKEND_BIN, "--port", str(PORTS["shadow"]),
            "--name", "shadow"]
    while not stop.is_set():
        shadow = compare.Started("shadow", argv, logfile=os.path.join(rundir, "shadow.log"))
        counts["up"] += 1
        stop.wait(args.flap_secs)
        shadow.stop(grace=1.0)
        stop.wait(args.flap_secs)


def churn(stop, proxy, counts):
    flip = False
    while not stop.wait(1.0):
        flip = not flip
        ok = proxy.set_weights(*((80, 20) if flip else (90, 10)))
        counts["ok" if ok else "failed"] += 1


def soak_figure(args, proxy, rundir):
    proxy.start(shadow=True)
    try:
        sat = compare.run_wrk(args.load_cpu, PORTS["proxy"], 64, 5, "/")
        target = sat["rps"] / 2
        delay_ms = 10
        conns = max(1, int(round(target * delay_ms / 1000)))
        # Each paced connection also waits for its answers, so the first
        # guess runs below target: calibrate on a short paced run.
        probe = wrk_paced(args, conns, delay_ms, 5)
        if probe.get("rps"):
            conns = max(1, int(round(conns * target / probe["rps"])))
        stop = threading.Event()
        flaps, changes = {"up": 0}, {"ok": 0, "failed": 0}
        threads = [threading.Thread(target=flap, args=(stop, args, rundir, flaps)),
                   threading.Thread(target=churn, args=(stop, proxy, changes))]
        samples = []
        result = {}

        def load():
            result["wrk"] = wrk_paced(args, conns, delay_ms, args.soak_secs)

        loader = threading.Thread(target=load)
        loader.start()
        for t in threads:
            t.start()
        started = time.time()
        while loader.is_alive():
            pids = proxy.pids()
            samples.append((time.time() - started, rss_kib(pids), fd_count(pids)))
            loader.join(timeout=5)
        stop.set()
        for t in threads:
            t.join()
        wrk = result.get("wrk", {})
        warm = [s for s in samples if s[0] >= args.soak_secs / 5]
        base_rss = warm[0][1] if warm else 0
        end_rss = statistics.median(s[1] for s in warm[-3:]) if warm else 0
        return {
            "secs": args.soak_secs, "saturation_rps": round(sat["rps"]),
            "rate_rps": round(wrk.get("rps", 0)), "connections": conns,
            "requests": wrk.get("requests"),
            "failed": wrk.get("errors"),
            "errors": {k: wrk.get(k) for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout")},
            "p99_ms": round(wrk.get("p99_us", 0) / 1e3, 2),
            "weight_changes": changes, "shadow_flaps": flaps["up"],
            "rss_mib_after_warmup": round(base_rss / 1024, 1),
            "rss_mib_end": round(end_rss / 1024, 1),
            "rss_growth_pct": round(100 * (end_rss - base_rss) / base_rss, 2) if base_rss else None,
            "fds": [s[2] for s in samples[:: max(1, len(samples) // 12)]],
        }
    finally:
        proxy.proc.stop()


def try_connect():
    """'refused', 'answered' or 'dropped' (accepted, then no answer)."""
    try:
        conn = http.client.HTTPConnection(HOST, PORTS["proxy"], timeout=2)
        conn.connect()
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "dropped"
    try:
        return "answered" if get(conn) else "dropped"
    except (OSError, http.client.HTTPException):
        return "dropped"
    finally:
        conn.close()


def sigterm_figure(args, proxy):
    proc = proxy.start()
    result = {}

    def load():
        result["wrk"] = compare.run_wrk(args.load_cpu, PORTS["proxy"], 64, 8, "/")

    for name in ("stable", "canary"):
        compare.backend_ctl(PORTS[name], "reset")
    loader = threading.Thread(target=load)
    loader.start()
    time.sleep(3)
    pids = proxy.pids()
    signalled = time.time()
    os.kill(proc.pid, proxy.stop_signal)
    time.sleep(0.2)
    attempts = [try_connect() for _ in range(5)]
    try:
        proc.popen.wait(timeout=DRAIN_SECS + 10)
        exit_secs = round(time.time() - signalled, 2)
    except Exception:  # noqa: BLE001
        exit_secs = None
    # nginx's workers may outlive the master by a moment.
    while any(compare.proc_starttime(p) is not None for p in pids) and time.time() - signalled < DRAIN_SECS + 10:
        time.sleep(0.05)
    loader.join()
    proc.stop()
    wrk = result.get("wrk", {})
    upstream = sum(compare.backend_ctl(PORTS[name], "count") for name in ("stable", "canary"))
    return {
        "requests": wrk.get("requests"),
        # Answered by a backend but never by the proxy: accepted and lost.
        "upstream_answers_lost": upstream - (wrk.get("requests") or 0),
        "errors": {k: wrk.get(k) for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout")},
        "new_connections_after_signal": {k: attempts.count(k) for k in ("refused", "answered", "dropped")},
        "exit_secs": exit_secs, "drain_secs": DRAIN_SECS,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--figures", default="conns,soak,sigterm")
    ap.add_argument("--proxies", default="switchyard,nginx")
    ap.add_argument("--soak-secs", type=int, default=600)
    ap.add_argument("--flap-secs", type=float, default=5.0)
    ap.add_argument("--probes", type=int, default=300)
    ap.add_argument("--proxy-cpu", default="1")
    ap.add_argument("--load-cpu", default="0")
    ap.add_argument("--switchyard-bin", default=os.path.join(REPO, "target", "release", "switchyard"))
    args = ap.parse_args()
    signal.signal(signal.SIGINT, compare._on_signal)
    signal.signal(signal.SIGTERM, compare._on_signal)
    rundir = tempfile.mkdtemp(prefix="hardening-")
    backends = {}
    try:
        for name in ("stable", "canary"):
            argv = ["taskset", "-c", args.load_cpu, compare.BACKEND_BIN, "--port", str(PORTS[name]), "--name", name]
            backends[name] = compare.Started(name, argv, logfile=os.path.join(rundir, f"{name}.log"))
            if not compare.wait_port(PORTS[name], backends[name], 5):
                raise RuntimeError(f"backend {name} did not start")
        report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "figures": {}}
        for figure in args.figures.split(","):
            for name in args.proxies.split(","):
                proxy = PROXIES[name](args, rundir)
                log(f"== {figure}: {name}")
                if figure == "conns":
                    value = conns_figure(args, proxy)
                elif figure == "soak":
                    value = soak_figure(args, proxy, rundir)
                elif figure == "sigterm":
                    value = sigterm_figure(args, proxy)
                else:
                    raise SystemExit(f"unknown figure {figure}")
                log(json.dumps(value))
                report["figures"].setdefault(figure, {})[name] = value
        print(json.dumps(report, indent=2))
    finally:
        compare.Started.stop_all()
        shutil.rmtree(rundir, ignore_errors=True)


if __name__ == "__main__":
    main()
