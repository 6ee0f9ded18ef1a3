#!/usr/bin/env python3
"""Load test of a running vicinity server over loopback.

Seeds a text collection with --seed-docs generated documents, then runs --concurrency clients
(keep-alive connections) for --duration seconds, each sending, at random, a text query (90 %;
--write-ratio sets the rest) or an upsert of one document (10 %: --replace-ratio of them, a
quarter by default, replace a seed document, the others add one; 1 keeps the collection's size
constant). Reports requests/s, the count of errors (any non-2xx answer or failed request, by
status), p50/p99/max latency per kind, the collection's size before and after, and the server's
resident memory (VmRSS from /proc/PID/status, sampled every --rss-interval seconds): a table
over time, and the growth over the second half of the run.

The server's PID is --pid, or found by the port it listens on (/proc/net/tcp and the
processes' open sockets; the server must run as the same user, or as root). Standard library
only.

    vicinity serve --data-dir /tmp/vicinity-load --addr 127.0.0.1:8080 &
    python3 scripts/load_test.py --addr 127.0.0.1:8080 --duration 300
"""

import argparse
import collections
import http.client
import json
import os
import random
import sys
import threading
import time

from words import sentence



class Client:
    def __init__(self, host, port, headers, timeout):
        self.host, self.port, self.timeout = host, port, timeout
        self.headers = {"content-type": "application/json", **headers}
        self.conn = None

    def call(self, method, path, body=None):
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        data = None if body is None else json.dumps(body).encode()
        try:
            self.conn.request(method, path, body=data, headers=self.headers)
            resp = self.conn.getresponse()
            raw = resp.read()
        except Exception:
            self.conn.close()
            self.conn = None
            raise
        if resp.getheader("connection", "").lower() == "close":
            self.conn.close()
            self.conn = None
        return resp.status, raw


def pid_by_port(port):
    """The PID of the process listening on TCP `port` (IPv4 or IPv6)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    local, state, inode = fields[1], fields[3], fields[9]
                    if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                        inodes.add(f"socket:[{inode}]")
        except FileNotFoundError:
            pass
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return int(pid)
            except OSError:
                pass
    return None


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def percentile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--addr", default="127.0.0.1:8080", help="the server, HOST:PORT")
    p.add_argument("--duration", type=float, default=60, help="seconds of load")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--write-ratio", type=float, default=0.10)
    p.add_argument("--collection", default="loadtest")
    p.add_argument("--seed-docs", type=int, default=2000, help="documents stored before the load")
    p.add_argument("--replace-ratio", type=float, default=0.25,
                   help="share of the writes that replace a seed document instead of adding one "
                        "(1 keeps the collection's size constant)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--pid", type=int, help="the server's PID (default: found by port)")
    p.add_argument("--rss-interval", type=float, default=5, help="seconds between RSS samples")
    p.add_argument("--timeout", type=float, default=60, help="per-request timeout, seconds")
    p.add_argument("--api-key", default=os.environ.get("VICINITY_API_KEY"),
                   help="sent as a bearer token (default: $VICINITY_API_KEY)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="also print the results as one JSON object")
    args = p.parse_args()

    host, port = args.addr.rsplit(":", 1)
    port = int(port)
    headers = {"authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    pid = args.pid or pid_by_port(port)
    if pid is None:
        print(f"no process found listening on port {port}: RSS not sampled (give --pid)",
              file=sys.stderr)

    setup = Client(host, port, headers, args.timeout)
    coll = f"/collections/{args.collection}"
    status, body = setup.call("PUT", coll, {"distance": "cosine"})
    if status not in (200, 201):
        sys.exit(f"creating the collection answered {status}: {body[:300]!r}")
    rng = random.Random(args.seed)
    for start in range(0, args.seed_docs, 100):
        docs = [{"id": f"seed-{i}", "text": sentence(rng, 12), "metadata": {"n": i}}
                for i in range(start, min(start + 100, args.seed_docs))]
        status, body = setup.call("POST", f"{coll}/documents", {"documents": docs})
        if status != 200:
            sys.exit(f"seeding answered {status}: {body[:300]!r}")

    def describe():
        status, body = setup.call("GET", coll)
        if status != 200:
            return "?"
        info = json.loads(body)
        return (f"{info['documents']} documents, {info['passages']} passages, index "
                f"{(info.get('index_state') or {}).get('status')}, "
                f"{info.get('memory_bytes', 0) / 2**20:.1f} MiB of index memory")

    before = describe()
    latencies = {"query": [], "write": []}
    errors = collections.Counter()
    lock = threading.Lock()
    stop_at = time.monotonic() + args.duration
    next_id = [0]

    def worker(n):
        wrng = random.Random(args.seed * 1000 + n)
        client = Client(host, port, headers, args.timeout)
        while time.monotonic() < stop_at:
            if wrng.random() < args.write_ratio:
                kind = "write"
                with lock:
                    next_id[0] += 1
                    i = next_id[0]
                # --replace-ratio of the writes replace a seed document, the others add one.
                if wrng.random() < args.replace_ratio and args.seed_docs:
                    doc_id = f"seed-{wrng.randrange(args.seed_docs)}"
                else:
                    doc_id = f"load-{i}"
                req = ("POST", f"{coll}/documents",
                       {"documents": [{"id": doc_id, "text": sentence(wrng, 40)}]})
            else:
                kind = "query"
                req = ("POST", f"{coll}/query", {"query": sentence(wrng, 6), "k": args.k})
            t0 = time.perf_counter()
            try:
                status, _ = client.call(*req)
                err = None if 200 <= status < 300 else str(status)
            except Exception as e:  # noqa: BLE001 - every failure is counted, by type
                err = type(e).__name__
            dt = time.perf_counter() - t0
            with lock:
                if err:
                    errors[f"{kind} {err}"] += 1
                else:
                    latencies[kind].append(dt)

    rss = []
    started = time.monotonic()

    def sampler():
        while True:
            t = time.monotonic() - started
            try:
                rss.append((t, rss_kib(pid)))
            except OSError:
                rss.append((t, None))
            if time.monotonic() >= stop_at:
                return
            time.sleep(min(args.rss_interval, max(0.0, stop_at - time.monotonic())))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(args.concurrency)]
    if pid:
        threads.append(threading.Thread(target=sampler))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started

    after = describe()
    total_ok = sum(len(v) for v in latencies.values())
    total_err = sum(errors.values())
    print(f"{args.duration:.0f} s, concurrency {args.concurrency}, "
          f"{100 * (1 - args.write_ratio):.0f} % queries / {100 * args.write_ratio:.0f} % writes, "
          f"{args.seed_docs} seed documents")
    print(f"collection before: {before}")
    print(f"collection after:  {after}")
    print(f"requests: {total_ok + total_err} in {elapsed:.1f} s = "
          f"{(total_ok + total_err) / elapsed:.1f}/s; errors: {total_err}"
          + (f" ({dict(errors)})" if errors else ""))
    print("| kind | ok | per s | p50 ms | p99 ms | max ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    summary = {}
    for kind, values in latencies.items():
        values.sort()
        s = {
            "ok": len(values),
            "per_s": len(values) / elapsed,
            "p50_ms": 1000 * percentile(values, 0.50),
            "p99_ms": 1000 * percentile(values, 0.99),
            "max_ms": 1000 * (values[-1] if values else float("nan")),
        }
        summary[kind] = s
        print(f"| {kind} | {s['ok']} | {s['per_s']:.1f} | {s['p50_ms']:.1f} | "
              f"{s['p99_ms']:.1f} | {s['max_ms']:.1f} |")

    samples = [(t, kib) for t, kib in rss if kib is not None]
    growth = None
    if samples:
        print(f"server RSS (pid {pid}), MiB:")
        step = max(1, len(samples) // 12)
        shown = samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else [])
        print("  " + "  ".join(f"{t:.0f}s {kib / 1024:.0f}" for t, kib in shown))
        half = [kib for t, kib in samples if t >= elapsed / 2]
        growth = (half[-1] - half[0]) / 1024 if len(half) > 1 else 0.0
        print(f"  min {min(k for _, k in samples) / 1024:.0f}, max "
              f"{max(k for _, k in samples) / 1024:.0f}, last {samples[-1][1] / 1024:.0f}; "
              f"growth over the second half: {growth:+.1f} MiB")
    if args.json:
        print(json.dumps({
            "duration_s": elapsed, "concurrency": args.concurrency,
            "write_ratio": args.write_ratio, "errors": dict(errors), "latency": summary,
            "rss_kib": samples, "rss_growth_second_half_mib": growth,
        }))
    sys.exit(1 if total_err else 0)


if __name__ == "__main__":
    main()
