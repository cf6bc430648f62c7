#!/usr/bin/env python3
"""Formats bench/run.sh's results.jsonl as the benchmark report (Python 3.11, stdlib only)."""

import json
import statistics
import sys

MIB = 1024 * 1024


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def med(values):
    return statistics.median(values) if values else float("nan")


def ms(us):
    return f"{us / 1000:7.3f} ms"


def signed_ms(us):
    return f"{us / 1000:+7.3f} ms"


def ratio(a, b):
    return a / b if b else float("nan")


def main():
    rows = load(sys.argv[1])
    env = next(r for r in rows if r["kind"] == "env")
    clk = env["clk_tck"]
    wrk = [r for r in rows if r["kind"] == "wrk"]
    verdicts = []

    def verdict(name, ok, detail):
        verdicts.append((name, "PASS" if ok else "MISS", detail))

    print("=" * 78)
    print("memgate benchmark: direct (mock) vs memgate vs nginx reverse proxy")
    print("=" * 78)
    print(f"cpu: {env['cpu']} x{env['ncpu']}   kernel {env['kernel']}")
    print(f"memgate {env['memgate_rev']} ({env['build']}), {env['nginx']}, wrk {env['wrk']}")
    print(
        f"pinning: gateway (memgate | nginx master+1 worker) on core {env['gw_core']}; "
        f"memgate-mock + wrk + python clients on core {env['load_core']}"
    )
    print(
        "memgate runs with RUST_LOG=warn (no per-request access log line); nginx with access_log off,\n"
        "upstream keepalive 64, proxy_http_version 1.1, proxy_buffering off."
    )
    print(
        f"wrk: non-streaming POST /v1/chat/completions (~1 KB JSON answer); latency runs {env['dur']} s, "
        f"c=64 runs {env['tput_dur']} s;\nmedian of {env['reps']} interleaved repetitions (direct, memgate, nginx back to back), "
        "each on a freshly restarted mock\nafter a 1 s unmeasured warm-up."
    )
    fr = [(r["foreign_ticks"] / clk / (r["wrk"]["duration_us"] / 1e6), r) for r in wrk if "foreign_ticks" in r]
    if fr:
        avg = sum(r["foreign_ticks"] for _, r in fr) / clk / (sum(r["wrk"]["duration_us"] for _, r in fr) / 1e6)
        worst, wr = max(fr, key=lambda x: x[0])
        redone = sum(r.get("attempts", 1) - 1 for _, r in fr)
        print(
            f"foreign CPU load during wrk runs (machine busy time minus gateway, mock and wrk): "
            f"avg {max(avg, 0.0):.2f} cores, worst kept run {max(worst, 0.0):.2f} ({wr['target']} c={wr['conns']}); "
            f"{redone} disturbed run(s) redone"
        )
        if worst > 0.15:
            print("WARNING: something else was using the CPU during some runs; figures may be disturbed, re-run")
    errs = [
        (r["target"], r["conns"], sum(v for k, v in r["wrk"].items() if k.startswith("err_")))
        for r in rows
        if r["kind"] == "wrk"
    ]
    bad = [e for e in errs if e[2]]
    if bad:
        print("WARNING: wrk reported errors / non-2xx answers: " + ", ".join(f"{t} c={c}: {n}" for t, c, n in bad))

    # ------------------------------------------------------------ latency
    added = {}
    print("\n-- Latency, non-streaming (wrk --latency; added = gateway minus direct, per repetition, median)")
    print(f"{'':10}{'conc':>5} {'p50':>11} {'p99':>11} {'added p50':>12} {'added p99':>12}")
    for c in (1, 32):
        runs = {t: sorted((r for r in wrk if r["phase"] == "latency" and r["conns"] == c and r["target"] == t),
                          key=lambda r: r["rep"]) for t in ("direct", "memgate", "nginx")}
        for t in ("direct", "memgate", "nginx"):
            p50 = med([r["wrk"]["p50_us"] for r in runs[t]])
            p99 = med([r["wrk"]["p99_us"] for r in runs[t]])
            if t == "direct":
                print(f"{t:10}{c:>5} {ms(p50):>11} {ms(p99):>11}")
                continue
            a50 = med([g["wrk"]["p50_us"] - d["wrk"]["p50_us"] for g, d in zip(runs[t], runs["direct"])])
            a99 = med([g["wrk"]["p99_us"] - d["wrk"]["p99_us"] for g, d in zip(runs[t], runs["direct"])])
            added[(t, c)] = (a50, a99)
            print(f"{t:10}{c:>5} {ms(p50):>11} {ms(p99):>11} {signed_ms(a50):>12} {signed_ms(a99):>12}")

    # ------------------------------------------------------------ throughput + cpu
    print("\n-- Throughput at c=64 (req/s, median) and gateway CPU per request (utime+stime / requests)")
    rps = {}
    has_static = any(r["target"] == "static" for r in wrk)
    tput_targets = ("direct", "memgate", "nginx") + (("static",) if has_static else ())
    for t in tput_targets:
        runs = [r for r in wrk if r["phase"] == "throughput" and r["target"] == t]
        rps[t] = med([r["wrk"]["requests"] / (r["wrk"]["duration_us"] / 1e6) for r in runs])
    cpu = {}
    for t in tput_targets[1:]:
        for phase, c in (("latency", 1), ("latency", 32), ("throughput", 64)):
            runs = [r for r in wrk if r["phase"] == phase and r["target"] == t and r["conns"] == c]
            ticks = sum(r["cpu_ticks"] for r in runs)
            reqs = sum(r["wrk"]["requests"] for r in runs)
            secs = sum(r["wrk"]["duration_us"] for r in runs) / 1e6
            cpu[(t, c)] = (ticks / clk * 1e6 / reqs if reqs else float("nan"), ticks / clk / secs if secs else 0)
    print(f"{'':10}{'req/s c=64':>12} {'CPU/req c=64':>14} {'core use':>9} {'CPU/req c=1':>13} {'CPU/req c=32':>13}")
    for t in tput_targets:
        if t == "direct":
            print(f"{t:10}{rps[t]:>12,.0f}")
            continue
        low = "" if t == "static" else f"{cpu[(t, 1)][0]:>10.1f} us {cpu[(t, 32)][0]:>10.1f} us"
        print(f"{t:10}{rps[t]:>12,.0f} {cpu[(t, 64)][0]:>11.1f} us {cpu[(t, 64)][1]:>8.0%} {low}")
    if has_static:
        print("('static' = the musl build, target/x86_64-unknown-linux-musl/release/memgate, c=64 only; information)")
    print(f"(utime+stime from /proc/PID/stat, {1000 / clk:.0f} ms ticks, summed over all runs of a kind; "
          "'core use' = gateway CPU s / wall s)")

    # ------------------------------------------------------------ streaming
    ttfb = next((r["result"] for r in rows if r["kind"] == "ttfb"), None)
    if ttfb:
        n = ttfb["direct"]["n"]
        print(f"\n-- Streaming time to first byte ({n} sequential stream=true requests per target, fresh connection each)")
        print(f"{'':10}{'head p50':>11} {'1st event p50':>14} {'p90':>11} {'p99':>11} {'added p50':>11}")
        d = ttfb["direct"]["event_p50_us"]
        for t in ("direct", "memgate", "nginx"):
            r = ttfb[t]
            extra = "" if t == "direct" else f" {signed_ms(r['event_p50_us'] - d):>11}"
            print(
                f"{t:10}{ms(r['head_p50_us']):>11} {ms(r['event_p50_us']):>14} {ms(r['event_p90_us']):>11} "
                f"{ms(r['event_p99_us']):>11}{extra}"
            )

    # ------------------------------------------------------------ memory
    rss = {(r["target"], r["phase"]): r["rss_kb"] for r in rows if r["kind"] == "rss"}
    holds = {r["target"]: r["result"] for r in rows if r["kind"] == "hold"}
    print("\n-- Memory (VmRSS; nginx = master + worker)")
    print(f"{'':10}{'idle fresh':>12} {'N streams open':>15} {'(HWM)':>10} {'streams closed':>15} {'idle after load':>16}")
    for t in ("memgate", "nginx", "static"):
        if (t, "idle_fresh") not in rss:
            continue
        h = holds.get(t) or {}
        print(
            f"{t:10}{rss.get((t, 'idle_fresh'), 0) / 1024:>9.1f} MB {h.get('rss_kb', 0) / 1024:>12.1f} MB "
            f"{h.get('hwm_kb', 0) / 1024:>7.1f} MB {rss.get((t, 'after_streams_closed'), 0) / 1024:>12.1f} MB "
            f"{rss.get((t, 'idle_after_load'), 0) / 1024:>13.1f} MB"
        )
    for t, h in holds.items():
        if h:
            print(
                f"  {t}: {h['with_first_event']}/{h['n']} streams had their first event after "
                f"{h['seconds_to_all_open']} s, {h['closed_early']} closed early, {h['threads']} threads; "
                f"answers: {h['status_lines']}"
            )

    # ------------------------------------------------------------ binary
    binary = next((r for r in rows if r["kind"] == "binary"), None)
    print("\n-- Static binary")
    if binary:
        print(f"{binary['path']} (built {binary['mtime']}): {binary['size']:,} bytes = {binary['size'] / MIB:.2f} MB")
        if binary["stripped_size"] != binary["size"]:
            print(f"  stripped copy: {binary['stripped_size']:,} bytes = {binary['stripped_size'] / MIB:.2f} MB")
        print(f"  file: {binary['file']}")
        if binary.get("stale"):
            print("  NOTE: older than the source tree (src/, Cargo.*): rebuild with BENCH_REBUILD_STATIC=1")
    else:
        print("  (no static binary: the musl build failed)")

    # ------------------------------------------------------------ targets
    print("\n-- Ratios to nginx and targets")
    for c in (1, 32):
        for i, p in ((0, "p50"), (1, "p99")):
            m, n = added[("memgate", c)][i], added[("nginx", c)][i]
            if n > 0:
                r = ratio(m, n)
                verdict(f"added latency {p} c={c:<2} <= 1.0x nginx", r <= 1.0,
                        f"{r:5.2f}x  ({m / 1000:+.3f} vs {n / 1000:+.3f} ms)")
            else:
                verdict(f"added latency {p} c={c:<2} <= 1.0x nginx", m <= n,
                        f" n/a   ({m / 1000:+.3f} vs {n / 1000:+.3f} ms; nginx adds nothing measurable)")
    r = ratio(cpu[("memgate", 64)][0], cpu[("nginx", 64)][0])
    verdict("CPU/request c=64       <= 2.0x nginx", r <= 2.0,
            f"{r:5.2f}x  ({cpu[('memgate', 64)][0]:.1f} vs {cpu[('nginx', 64)][0]:.1f} us)")
    r = ratio(rps["memgate"], rps["nginx"])
    verdict("throughput c=64        >= 0.5x nginx", r >= 0.5,
            f"{r:5.2f}x  ({rps['memgate']:,.0f} vs {rps['nginx']:,.0f} req/s)")
    idle = rss.get(("memgate", "idle_fresh"), 0) / 1024
    verdict("idle RSS               <= 10 MB", idle <= 10, f"{idle:5.1f} MB")
    h = holds.get("memgate") or {}
    streams_mb = h.get("rss_kb", 0) / 1024
    all_open = h.get("with_first_event") == h.get("n") and h.get("n")
    verdict(f"RSS with {h.get('n', '?')} streams     <= 40 MB", bool(all_open) and streams_mb <= 40,
            f"{streams_mb:5.1f} MB" + ("" if all_open else "  (not all streams were open!)"))
    if binary:
        verdict("stripped static binary <= 8 MB", binary["stripped_size"] <= 8 * MIB,
                f"{binary['stripped_size'] / MIB:5.2f} MB")
    else:
        verdict("stripped static binary <= 8 MB", False, "no binary")
    for name, v, detail in verdicts:
        print(f"  {v}  {name:38} {detail}")
    print(f"\n{sum(v == 'PASS' for _, v, _ in verdicts)} PASS, {sum(v == 'MISS' for _, v, _ in verdicts)} MISS "
          "(MB = MiB = 2^20 bytes)")


if __name__ == "__main__":
    main()
