#!/usr/bin/env python3
"""A throwaway single-member etcd on loopback for the fleet benchmarks
(benches/fleet.py, weight_churn.py --fleet, callgrind.sh with FLEET=1):
free ports, a data dir the caller owns, Debian's etcd-server. Also reads
what etcd says about its load: its own /metrics, and the keys under a prefix
with their sizes (through etcd's JSON gateway, so no client library).

    python3 benches/etcd_local.py DATA_DIR CLIENT_PORT PEER_PORT   # exec etcd in the foreground
"""
import base64
import json
import os
import shutil
import socket
import sys
import time
import urllib.request

HOST = "127.0.0.1"


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def argv(data_dir, client_port, peer_port):
    """etcd's command line: one member, loopback only."""
    client = f"http://{HOST}:{client_port}"
    peer = f"http://{HOST}:{peer_port}"
    etcd = shutil.which("etcd")
    if etcd is None:
        sys.exit("etcd missing: apt-get install etcd-server")
    return [etcd, "--name", "bench", "--data-dir", data_dir,
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"bench={peer}"]


def wait_healthy(url, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
                if b"true" in r.read():
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def metrics(url):
    """etcd's /metrics as {name: value summed over labels}."""
    out = {}
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if not line or line.startswith("#"):
                continue
            name_labels, _, value = line.rpartition(" ")
            name = name_labels.split("{", 1)[0]
            try:
                out[name] = out.get(name, 0.0) + float(value)
            except ValueError:
                pass
    return out


def _b64(text):
    return base64.b64encode(text.encode()).decode()


def prefix_end(prefix):
    """The range end that covers every key starting with `prefix`."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def keys(url, prefix):
    """[(key, value bytes)] of every key under `prefix`."""
    body = json.dumps({"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))}).encode()
    req = urllib.request.Request(f"{url}/v3/kv/range", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        reply = json.load(r)
    return [(base64.b64decode(kv["key"]).decode(), len(base64.b64decode(kv.get("value", ""))))
            for kv in reply.get("kvs", [])]


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    data_dir, client_port, peer_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    command = argv(data_dir, client_port, peer_port)
    os.execv(command[0], command)
