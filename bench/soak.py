"""Soak load for bench/soak.sh: mixed requests and faults against a running memgate, then checks.

Workers loop over a weighted mix until the time is up: chat (json, stream), Responses (json,
stream), embeddings, memory exchanges on SOAK_THREADS threads (x-thread-id + x-resource-id), and
faults (truncated upstream stream, upstream hang with a client timeout, upstream HTML 503,
client hanging up mid-stream). Every outcome is classified: an expected result, or an error of a
named kind. At the end, each memory thread must hold exactly two messages per exchange the
workers saw complete (user + assistant), and memgate's RSS and open files must not have grown
beyond bounds. Prints a summary with PASS/FAIL lines; exits 1 on any FAIL. Stdlib only.
"""

import argparse
import collections
import http.client
import json
import os
import random
import socket
import sys
import threading
import time

SECONDS = int(os.environ.get("SOAK_SECONDS", "180"))
WORKERS = int(os.environ.get("SOAK_WORKERS", "12"))
THREADS = int(os.environ.get("SOAK_THREADS", "50"))
RSS_GROWTH_MIB = int(os.environ.get("SOAK_RSS_GROWTH_MIB", "24"))
WARMUP = min(20, SECONDS // 6)


def user(text):
    return [{"role": "user", "content": text}]


class Counts:
    """Outcomes by request kind, errors by (kind, reason), completed exchanges per thread."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ok = collections.Counter()
        self.errors = collections.Counter()
        self.exchanges = collections.Counter()
        self.memory_failures = 0

    def good(self, kind):
        with self.lock:
            self.ok[kind] += 1

    def bad(self, kind, reason):
        with self.lock:
            self.errors[(kind, reason)] += 1


class Client:
    """One keep-alive connection per worker, reopened after anything that leaves it unusable."""

    def __init__(self, addr):
        self.host, self.port = addr.rsplit(":", 1)
        self.conn = None

    def open(self, timeout=30):
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, int(self.port), timeout=timeout)
        return self.conn

    def drop(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def send(self, method, path, body=None, headers=None, timeout=30):
        conn = self.open(timeout)
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        h = {"content-type": "application/json"}
        h.update(headers or {})
        data = None if body is None else json.dumps(body)
        conn.request(method, path, body=data, headers=h)
        return conn.getresponse()


def sse_payloads(res):
    """The `data:` payloads of an SSE response, read as they come."""
    out = []
    for raw in res:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if line.startswith("data: "):
            out.append(line[6:])
    return out


def run_one(client, counts, rng, seq):
    """Sends one request of a kind drawn from the mix and classifies the outcome."""
    kind = rng.choices(KINDS, WEIGHTS)[0]
    try:
        HANDLERS[kind](client, counts, rng, seq, kind)
    except (socket.timeout, TimeoutError):
        client.drop()
        counts.bad(kind, "client timeout")
    except (ConnectionError, http.client.HTTPException, OSError) as e:
        client.drop()
        counts.bad(kind, type(e).__name__)


def expect_json(client, counts, kind, path, body, check, headers=None):
    res = client.send("POST", path, body, headers)
    data = res.read()
    if res.status != 200:
        counts.bad(kind, f"status {res.status}")
        return False
    try:
        ok = check(json.loads(data))
    except ValueError:
        ok = False
    if ok:
        counts.good(kind)
    else:
        counts.bad(kind, "unexpected body")
    return ok


def expect_stream(client, counts, kind, path, body, last, headers=None):
    res = client.send("POST", path, body, headers)
    if res.status != 200:
        res.read()
        counts.bad(kind, f"status {res.status}")
        return False
    events = sse_payloads(res)
    if events and last(events[-1]):
        counts.good(kind)
        return True
    counts.bad(kind, "stream did not finish")
    return False


def chat_json(client, counts, rng, seq, kind):
    body = {"model": "openai/gpt-4o-mini", "messages": user("What is 2+2? Reply with just the number.")}
    expect_json(client, counts, kind, "/v1/chat/completions", body,
                lambda v: v["choices"][0]["message"]["content"] == "4")


def chat_stream(client, counts, rng, seq, kind):
    body = {"model": "openai/gpt-4o-mini", "stream": True, "messages": user("Count from 1 to 5")}
    expect_stream(client, counts, kind, "/v1/chat/completions", body, lambda e: e == "[DONE]")


def responses_json(client, counts, rng, seq, kind):
    body = {"model": "openai/gpt-4o-mini", "input": "What is 3+3?"}
    expect_json(client, counts, kind, "/v1/responses", body, lambda v: v["status"] == "completed")


def responses_stream(client, counts, rng, seq, kind):
    body = {"model": "openai/gpt-4o-mini", "stream": True, "input": "What is 3+3?"}
    expect_stream(client, counts, kind, "/v1/responses", body,
                  lambda e: json.loads(e).get("type") == "response.completed")


def embeddings(client, counts, rng, seq, kind):
    body = {"model": "openai/text-embedding-3-small", "input": "Your text here"}
    expect_json(client, counts, kind, "/v1/embeddings", body, lambda v: len(v["data"][0]["embedding"]) > 0)


def memory(client, counts, rng, seq, kind):
    """One exchange on a random thread; counted only when the client saw it complete."""
    t = rng.randrange(THREADS)
    headers = {"x-thread-id": f"soak-thread-{t}", "x-resource-id": f"soak-user-{t % 10}"}
    # Unique text: a message equal to the stored tail would read as a resent history.
    text = f"soak note {seq} for thread {t}"
    form = rng.randrange(4)
    if form == 0:
        done = expect_json(client, counts, kind, "/v1/chat/completions",
                           {"model": "mem/gpt-4o-mini", "messages": user(text)},
                           lambda v: v["choices"][0]["message"]["content"] == "OK.", headers)
    elif form == 1:
        done = expect_stream(client, counts, kind, "/v1/chat/completions",
                             {"model": "mem/gpt-4o-mini", "stream": True, "messages": user(text)},
                             lambda e: e == "[DONE]", headers)
    elif form == 2:
        done = expect_json(client, counts, kind, "/v1/responses",
                           {"model": "mem/gpt-4o-mini", "input": text},
                           lambda v: v["status"] == "completed", headers)
    else:
        done = expect_stream(client, counts, kind, "/v1/responses",
                             {"model": "mem/gpt-4o-mini", "stream": True, "input": text},
                             lambda e: json.loads(e).get("type") == "response.completed", headers)
    with counts.lock:
        if done:
            counts.exchanges[t] += 1
        else:
            counts.memory_failures += 1


def fault_truncated(client, counts, rng, seq, kind):
    """The upstream breaks off: the stream must end with an error event, not [DONE]."""
    body = {"model": "openai/gpt-4o-mini", "stream": True, "messages": user("memgate-test: truncated")}
    res = client.send("POST", "/v1/chat/completions", body)
    events = sse_payloads(res)
    if res.status == 200 and events and "stream_interrupted" in events[-1]:
        counts.good(kind)
    else:
        counts.bad(kind, f"status {res.status}, last event {events[-1:]!r}")


def fault_hang(client, counts, rng, seq, kind):
    """The upstream hangs 3 s; the client gives up after 0.5 s (memgate cancels upstream)."""
    body = {"model": "openai/gpt-4o-mini", "messages": user("memgate-test: hang")}
    try:
        res = client.send("POST", "/v1/chat/completions", body, timeout=0.5)
        res.read()
        counts.bad(kind, f"answered {res.status} before the client timeout")
    except (socket.timeout, TimeoutError):
        counts.good(kind)
    client.drop()


def fault_html(client, counts, rng, seq, kind):
    """The upstream answers an HTML 503: the client gets a 503 in OpenAI's shape."""
    body = {"model": "openai/gpt-4o-mini", "messages": user("memgate-test: html error")}
    res = client.send("POST", "/v1/chat/completions", body)
    data = res.read()
    try:
        shaped = res.status == 503 and json.loads(data)["error"]["type"] == "server_error"
    except (ValueError, KeyError, TypeError):
        shaped = False
    if shaped:
        counts.good(kind)
    else:
        counts.bad(kind, f"status {res.status}")


def fault_hangup(client, counts, rng, seq, kind):
    """The client reads the first event of a long stream and hangs up."""
    body = {"model": "openai/gpt-4o-mini", "stream": True, "messages": user("memgate-test: long stream")}
    res = client.send("POST", "/v1/chat/completions", body)
    first = res.readline()
    client.drop()
    if res.status == 200 and first:
        counts.good(kind)
    else:
        counts.bad(kind, f"status {res.status}")


MIX = [
    (chat_json, 20), (chat_stream, 15), (responses_json, 8), (responses_stream, 8), (embeddings, 8),
    (memory, 30), (fault_truncated, 3), (fault_hang, 2), (fault_html, 3), (fault_hangup, 3),
]
HANDLERS = {f.__name__: f for f, _ in MIX}
KINDS = [f.__name__ for f, _ in MIX]
WEIGHTS = [w for _, w in MIX]


def proc_status(pid):
    """(RSS in KiB, open file descriptors) of a process."""
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def stored_messages(addr, thread):
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", f"/v1/memory/threads/soak-thread-{thread}/messages?limit=1")
    res = conn.getresponse()
    body = json.loads(res.read())
    conn.close()
    return body.get("total", 0) if res.status == 200 else 0


def observation_record(addr, thread):
    """A thread's observation record: observer and reflector runs, failures."""
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", f"/v1/memory/threads/soak-thread-{thread}/observations/record")
    res = conn.getresponse()
    body = json.loads(res.read())
    conn.close()
    return body if res.status == 200 else {}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gateway", required=True)
    ap.add_argument("--pid", required=True, type=int)
    ap.add_argument("--log", required=True)
    ap.add_argument("--data", required=True, help="memgate's data_dir")
    args = ap.parse_args()

    counts = Counts()
    start_rss, start_fds = proc_status(args.pid)
    samples = []
    stop = time.monotonic() + SECONDS
    seq = iter(range(10**12))
    seq_lock = threading.Lock()

    def worker(n):
        rng = random.Random(n)
        client = Client(args.gateway)
        while time.monotonic() < stop:
            with seq_lock:
                s = next(seq)
            run_one(client, counts, rng, s)
        client.drop()

    began = time.monotonic()
    workers = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(WORKERS)]
    for w in workers:
        w.start()
    while time.monotonic() < stop:
        time.sleep(min(5, max(0.1, stop - time.monotonic())))
        samples.append((time.monotonic() - began, *proc_status(args.pid)))
    for w in workers:
        w.join(timeout=60)
    elapsed = time.monotonic() - began
    time.sleep(3)  # cancelled upstreams and lingering closes settle
    end_rss, end_fds = proc_status(args.pid)
    warm_rss = next((r for t, r, _ in samples if t >= WARMUP), start_rss)
    peak_rss = max([r for _, r, _ in samples] + [end_rss])

    lost, extra = 0, 0
    for t in range(THREADS):
        want = 2 * counts.exchanges[t]
        have = stored_messages(args.gateway, t)
        lost += max(0, want - have)
        extra += max(0, have - want)

    with open(args.log, errors="replace") as f:
        log = f.read()
    panics = log.count("panicked")
    warnings = log.count("[WARN")
    fault_kinds = {k for k in KINDS if k.startswith("fault_")}
    served = sum(counts.ok.values())
    failed = sum(counts.errors.values())
    unexpected = sum(n for (k, _), n in counts.errors.items() if k not in fault_kinds)

    print(f"soak: {elapsed:.0f} s, {WORKERS} workers, {THREADS} memory threads")
    print(f"requests: {served + failed} ({(served + failed) / elapsed:.0f}/s), as expected {served}, errors {failed}")
    for k in KINDS:
        print(f"  {k:18} ok {counts.ok[k]}")
    for (k, why), n in sorted(counts.errors.items()):
        print(f"  error {k}: {why} x{n}")
    print(f"memory: {sum(counts.exchanges.values())} exchanges completed, "
          f"{counts.memory_failures} failed; stored messages lost {lost}, unexpected {extra}")
    print(f"memgate RSS: start {start_rss / 1024:.1f} MiB, after {WARMUP} s warm-up {warm_rss / 1024:.1f} MiB, "
          f"peak {peak_rss / 1024:.1f} MiB, end {end_rss / 1024:.1f} MiB; open fds start {start_fds}, end {end_fds}")
    # redb caches the pages it touches, so RSS follows the database's size: show both.
    db = sum(os.path.getsize(os.path.join(args.data, f)) for f in os.listdir(args.data))
    trail = ", ".join(f"{t:.0f}s {r / 1024:.1f}" for t, r, _ in samples[::6])
    print(f"RSS over time (MiB): {trail}; database {db / 2**20:.1f} MiB")
    records = [observation_record(args.gateway, t) for t in range(THREADS)]
    runs = {k: sum(r.get(k, 0) for r in records) for k in ("observerRuns", "reflectorRuns", "failures")}
    print(f"observer runs {runs['observerRuns']}, reflector runs {runs['reflectorRuns']}, "
          f"failed runs {runs['failures']}; {warnings} warnings in memgate's log")
    checks = [
        ("no unexpected errors", unexpected == 0),
        ("faults answered as designed", all(counts.ok[k] > 0 for k in fault_kinds)),
        ("zero lost messages", lost == 0 and extra == 0 and counts.memory_failures == 0),
        (f"RSS growth after warm-up <= {RSS_GROWTH_MIB} MiB", end_rss - warm_rss <= RSS_GROWTH_MIB * 1024),
        # Idle upstream connections stay pooled: at most one per worker for each of the two mocks.
        (f"no leaked connections (fds <= start + {2 * WORKERS})", end_fds <= start_fds + 2 * WORKERS),
        ("no panics in the log", panics == 0),
    ]
    for name, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'} {name}")
    sys.exit(0 if all(ok for _, ok in checks) else 1)


if __name__ == "__main__":
    main()
