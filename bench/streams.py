#!/usr/bin/env python3
"""Raw-socket HTTP/1.1 helpers for bench/run.sh (Python 3.11, stdlib only).

  streams.py check  HOST:PORT [--stream]
      One POST /v1/chat/completions; prints the status and the first bytes of the body; exits 1
      unless the answer is 200 and looks like a chat completion (or an SSE stream of chunks).

  streams.py ttfb   --n N NAME=HOST:PORT [NAME=HOST:PORT ...]
      N streaming requests per target, interleaved (A, B, C, A, B, C, ...) so drift hits all
      targets alike, one fresh connection each. Per request: time from the first byte sent to the
      first response byte (head) and to the first SSE event (`data:`). Prints one JSON object.

  streams.py hold   --n N --port PORT --pids PID[,PID...]
      Opens N concurrent streaming requests (slow-stream fixture), waits until every one has
      received its first SSE event, waits one more second, then reads VmRSS/VmHWM of the PIDs
      (summed) and checks the streams are all still open. Prints one JSON object, then closes all.
"""

import json
import selectors
import socket
import statistics
import sys
import time

MODEL = "mock/gpt-4o-mini"


def body_for(content, stream):
    doc = {"model": MODEL, "messages": [{"role": "user", "content": content}]}
    if stream:
        doc["stream"] = True
    return json.dumps(doc, separators=(",", ":")).encode()


def request_bytes(port, content, stream, close=True):
    body = body_for(content, stream)
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\n"
        "Accept: */*\r\n"
        f"Content-Length: {len(body)}\r\n"
        + ("Connection: close\r\n" if close else "")
        + "\r\n"
    )
    return head.encode() + body


def split_addr(addr):
    host, _, port = addr.rpartition(":")
    return host or "127.0.0.1", int(port)


def connect(host, port, timeout=10.0):
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_all(s, limit=1 << 20):
    chunks = []
    total = 0
    while total < limit:
        b = s.recv(65536)
        if not b:
            break
        chunks.append(b)
        total += len(b)
    return b"".join(chunks)


def cmd_check(args):
    addr = args[0]
    stream = "--stream" in args
    host, port = split_addr(addr)
    s = connect(host, port)
    content = "bench-stream" if stream else "bench-plain"
    s.sendall(request_bytes(port, content, stream))
    raw = read_all(s)
    s.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
    ok = status_line.split(" ")[1:2] == ["200"]
    want = b"chat.completion.chunk" if stream else b'"chat.completion"'
    ok = ok and want in body and (not stream or b"[DONE]" in body)
    snippet = body[:160].decode(errors="replace").replace("\r", "\\r").replace("\n", "\\n")
    print(f"{addr}{' (stream)' if stream else ''}: {status_line} | {snippet}")
    return 0 if ok else 1


def one_stream(host, port):
    """Returns (seconds to first response byte, seconds to first SSE event)."""
    s = connect(host, port)
    req = request_bytes(port, "bench-stream", True)
    buf = b""
    t0 = time.perf_counter()
    s.sendall(req)
    t_head = t_event = None
    while True:
        b = s.recv(65536)
        now = time.perf_counter()
        if not b:
            break
        if t_head is None:
            t_head = now - t0
        buf += b
        if t_event is None:
            end = buf.find(b"\r\n\r\n")
            if end >= 0 and b"data:" in buf[end:]:
                t_event = now - t0
        if b"[DONE]" in buf:
            break
    s.close()
    if t_head is None or t_event is None:
        raise RuntimeError(f"stream from {host}:{port} ended early: {buf[:200]!r}")
    return t_head, t_event


def pct(values, p):
    v = sorted(values)
    k = min(len(v) - 1, max(0, round(p / 100 * (len(v) - 1))))
    return v[k]


def cmd_ttfb(args):
    n = int(args[args.index("--n") + 1])
    targets = [a.split("=", 1) for a in args if "=" in a]
    warm = max(5, n // 10)
    for _ in range(warm):
        for _, addr in targets:
            one_stream(*split_addr(addr))
    res = {name: {"head": [], "event": []} for name, _ in targets}
    for _ in range(n):
        for name, addr in targets:
            h, e = one_stream(*split_addr(addr))
            res[name]["head"].append(h * 1e6)
            res[name]["event"].append(e * 1e6)
    out = {}
    for name, r in res.items():
        out[name] = {
            "n": n,
            "head_p50_us": statistics.median(r["head"]),
            "event_p50_us": statistics.median(r["event"]),
            "event_p90_us": pct(r["event"], 90),
            "event_p99_us": pct(r["event"], 99),
        }
    print(json.dumps(out))
    return 0


def read_status(pid):
    vals = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "Threads"):
                vals[k] = int(v.split()[0])
    return vals


def cmd_hold(args):
    n = int(args[args.index("--n") + 1])
    port = int(args[args.index("--port") + 1])
    pids = [int(p) for p in args[args.index("--pids") + 1].split(",") if p]
    host = "127.0.0.1"
    req = request_bytes(port, "bench-slow-stream", True)
    sel = selectors.DefaultSelector()
    socks = []
    t0 = time.monotonic()
    for i in range(n):
        s = connect(host, port)
        s.sendall(req)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
        socks.append(s)
    bufs = [b""] * n
    got_event = [False] * n
    closed = [False] * n
    deadline = t0 + 30
    while not all(got_event) and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            i = key.data
            try:
                b = key.fileobj.recv(65536)
            except BlockingIOError:
                continue
            if not b:
                closed[i] = True
                sel.unregister(key.fileobj)
                continue
            bufs[i] += b
            end = bufs[i].find(b"\r\n\r\n")
            if end >= 0 and b"data:" in bufs[i][end:]:
                got_event[i] = True
    t_all = time.monotonic() - t0
    time.sleep(1.0)
    # Drain whatever arrived meanwhile and notice closed streams, without blocking.
    for key, _ in sel.select(timeout=0):
        i = key.data
        try:
            if not key.fileobj.recv(65536):
                closed[i] = True
        except (BlockingIOError, ConnectionError):
            pass
    totals = {"VmRSS": 0, "VmHWM": 0, "Threads": 0}
    for pid in pids:
        for k, v in read_status(pid).items():
            totals[k] += v
    statuses = {}
    for b in bufs:
        line = b.split(b"\r\n", 1)[0].decode(errors="replace")
        statuses[line] = statuses.get(line, 0) + 1
    out = {
        "n": n,
        "with_first_event": sum(got_event),
        "closed_early": sum(closed),
        "seconds_to_all_open": round(t_all, 3),
        "rss_kb": totals["VmRSS"],
        "hwm_kb": totals["VmHWM"],
        "threads": totals["Threads"],
        "status_lines": statuses,
    }
    print(json.dumps(out), flush=True)
    for s in socks:
        s.close()
    return 0 if sum(got_event) == n else 1


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = sys.argv[1], sys.argv[2:]
    return {"check": cmd_check, "ttfb": cmd_ttfb, "hold": cmd_hold}[cmd](args)


if __name__ == "__main__":
    sys.exit(main())
