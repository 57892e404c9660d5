#!/usr/bin/env python3
"""Opens N client connections to a proxy, sends one request on each, reads
its answer, then keeps every connection open and idle: what a proxy holds
per idle keep-alive connection (benches/memory.sh measures its RSS).

    idle_clients.py --port P [-n N] [--proto h1|h2c] [--batch 50]

Prints "ready N" once all N answered, then waits for a line on stdin (or its
end) and closes them all at once (a burst ending), printing "closed".
HTTP/1.1: `GET / HTTP/1.1`, keep-alive. h2c: prior knowledge, one GET on
stream 1 (HPACK static-table entries and one literal), SETTINGS acknowledged.
Connections open in batches, each batch's requests in flight together.
"""

import argparse
import socket
import struct
import sys

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def h2_frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def h2_request(host):
    # :method GET (2), :path / (4), :scheme http (6), :authority literal (name 1).
    block = b"\x82\x84\x86\x01" + bytes([len(host)]) + host
    return H2_PREFACE + h2_frame(4, 0, 0) + h2_frame(1, 0x5, 1, block)


def read_h1(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response body")
        body += chunk
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(f"unexpected answer: {head[:40]!r}")


def read_h2(sock):
    buf = b""
    while True:
        while len(buf) < 9:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed before the response")
            buf += chunk
        length = int.from_bytes(buf[:3], "big")
        kind, flags = buf[3], buf[4]
        stream = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
        while len(buf) < 9 + length:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed inside a frame")
            buf += chunk
        buf = buf[9 + length:]
        if kind == 4 and not flags & 0x1:
            sock.sendall(h2_frame(4, 0x1, 0))
        elif kind == 7:
            raise ConnectionError("GOAWAY from the server")
        elif kind in (0, 1) and stream == 1 and flags & 0x1:
            return


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--proto", choices=["h1", "h2c"], default="h1")
    parser.add_argument("--batch", type=int, default=50)
    args = parser.parse_args()

    host = f"{args.host}:{args.port}".encode()
    request = h2_request(host) if args.proto == "h2c" else b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"
    read = read_h2 if args.proto == "h2c" else read_h1
    conns = []
    while len(conns) < args.n:
        batch = []
        for _ in range(min(args.batch, args.n - len(conns))):
            sock = socket.create_connection((args.host, args.port), timeout=30)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            batch.append(sock)
        for sock in batch:
            sock.sendall(request)
        for sock in batch:
            read(sock)
        conns.extend(batch)
    print(f"ready {len(conns)}", flush=True)
    sys.stdin.readline()
    for sock in conns:
        sock.close()
    print("closed", flush=True)


if __name__ == "__main__":
    main()
