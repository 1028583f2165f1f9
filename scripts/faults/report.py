#!/usr/bin/env python3
"""report.py — the markdown report of scripts/bench-faults.sh from the load.py JSON files.

--runs TSV (fault, proxy, json, note per line, a header first), --out FILE (also printed on stdout),
--baseline-dir DIR (none-PROXY.json kept from an earlier run, used when this run has no `none`),
--header LINE (repeatable), --steady S (the window the steady p99 is taken over starts at S s).
"""

import argparse
import json
import os
import sys
import time

FAULT_TEXT = {
    "none": "three good servers (baseline)",
    "refused": "bad port has no listener: connect refused at once",
    "blackhole": "bad port drops SYNs (backlog-0 listener with a full accept queue): connect hangs",
    "hang": "bad server accepts and reads, never answers",
    "503": "bad server answers 503 at once",
}
TARGET_RATIO = 1.10


def fmt(v, p=1):
    return "—" if v is None else f"{v:,.{p}f}"


def pct2xx(r):
    if not r.get("requests"):
        return "—"
    if r["ok"] == r["requests"]:
        return "100"
    return "%.3f" % (100.0 * r["ok"] / r["requests"])


def timeout_paid(r):
    """Requests slower than 195 ms (a full 200 ms connect timeout or more was paid); from the count
    when load.py measured it, else from the list of slow requests when that list is complete."""
    if "195" in r["slow"]:
        return r["slow"]["195"]
    lst = r.get("slow_requests", [])
    if len(lst) == r["slow"].get("150", 0):
        return sum(1 for x in lst if x["ms"] > 195)
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--baseline-dir")
    ap.add_argument("--header", action="append", default=[])
    ap.add_argument("--steady", type=float, default=3.0)
    a = ap.parse_args()

    runs, faults, proxies = {}, [], []
    for line in open(a.runs).read().splitlines()[1:]:
        f, p, js, note = (line.split("\t") + ["", "", "", ""])[:4]
        r = None
        if js:
            try:
                r = json.load(open(js))
            except (OSError, ValueError) as e:
                note = (note + "; " if note else "") + "unreadable result: %s" % e
        runs[(f, p)] = (r, note)
        if f not in faults:
            faults.append(f)
        if p not in proxies:
            proxies.append(p)

    # no-fault steady p99 per proxy: this run's, else the kept one; and how much the p99 of single
    # seconds moved in it (steady window, the last partial second left out): the noise
    base, base_note, spread = {}, {}, {}
    for p in proxies:
        r = runs.get(("none", p), (None, ""))[0]
        if not (r and r["steady"]["p99"] is not None) and a.baseline_dir:
            path = os.path.join(a.baseline_dir, "none-%s.json" % p)
            try:
                r = json.load(open(path))
                base_note[p] = "no-fault baseline of %s from %s" % (
                    p, time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(path))))
            except (OSError, ValueError):
                r = None
        if r and r["steady"]["p99"] is not None:
            base[p] = r["steady"]["p99"]
            v = [b["p99"] for i, b in enumerate(r["timeline"][:-1]) if i >= a.steady and b.get("p99")]
            if v:
                spread[p] = (min(v), max(v))

    L = ["## lifeline fault benchmark, %s" % time.strftime("%Y-%m-%d %H:%M"), ""]
    for h in a.header:
        L.append("- " + h)
    L.append("- pool of three, the bad server listed first; connect 200ms, response 500ms, 3 tries, "
             "2 s per request (see scripts/bench-faults.sh for every proxy's configuration)")
    L.append("- latencies in ms over every request (no coordinated-omission correction); "
             ">150 / >450: requests slower than that (about a connect / a response timeout paid); "
             "steady p99: requests started after %g s; vs no-fault: steady p99 / the same proxy's "
             "steady p99 with three good servers; 1st s max: the slowest request started in the first second"
             % a.steady)
    for n in base_note.values():
        L.append("- " + n)
    if spread:
        L.append("- noise: with three good servers the p99 of single seconds (steady window) ranges "
                 "over " + "; ".join("%s %.1f-%.1f" % (p, lo, hi) for p, (lo, hi) in spread.items())
                 + " ms — a steady p99 inside that range is not a difference")
    L.append("")

    for f in faults:
        L.append("### %s — %s" % (f, FAULT_TEXT.get(f, f)))
        L.append("")
        L.append("| proxy | req/s | 2xx % | p50 | p99 | max | >150ms | >450ms | steady p99 | vs no-fault | 1st s max |")
        L.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        extra = []
        for p in proxies:
            if (f, p) not in runs:
                continue
            r, note = runs[(f, p)]
            if r is None:
                L.append("| %s | %s |  |  |  |  |  |  |  |  |  |" % (p, note or "no result"))
                continue
            sp = r["steady"]["p99"]
            ratio = "%.2f" % (sp / base[p]) if sp is not None and base.get(p) else "—"
            L.append("| %s | %s | %s | %s | %s | %s | %d | %d | %s | %s | %s |" % (
                p, fmt(r["rps"], 0), pct2xx(r), fmt(r["p50"], 2), fmt(r["p99"], 2), fmt(r["max"], 1),
                r["slow"].get("150", 0), r["slow"].get("450", 0), fmt(sp, 2), ratio,
                fmt(r["first_second"]["max"], 1)))
            bad = {k: v for k, v in r["statuses"].items() if not k.startswith("2")}
            stall = r.get("client_stall_max_ms", 0) or 0
            if bad or r["errors"] or note or stall >= 50:
                parts = []
                if stall >= 50:
                    parts.append("the load client itself stalled up to %.0f ms (%d gaps over 20 ms): "
                                 "slow requests around then may be the machine, not the proxy" % (
                                     stall, len(r.get("client_stalls", []))))
                if bad:
                    parts.append("non-2xx: " + ", ".join("%s x%d" % (k if k != "0" else "error", v)
                                                         for k, v in sorted(bad.items())))
                if r.get("fallbacks"):
                    parts.append("x-lifeline-fallback: " + ", ".join("%s x%d" % kv for kv in sorted(r["fallbacks"].items())))
                if r["errors"]:
                    parts.append("client errors: " + ", ".join("%s x%d" % kv for kv in sorted(r["errors"].items())))
                if note:
                    parts.append(note)
                extra.append("- %s: %s" % (p, "; ".join(parts)))
        L.append("")
        if extra:
            L.extend(extra)
            L.append("")

    # lifeline's targets
    for p, want_fast in (("lifeline", True), ("lifeline-plain", False)):
        if p not in proxies:
            continue
        L.append("### targets: %s" % p)
        L.append("")
        L.append("100%% 2xx in every fault; steady p99 within %d%% of the no-fault p99 (above that but "
                 "inside the no-fault per-second spread: noise, not a miss)%s." % (
                     round((TARGET_RATIO - 1) * 100),
                     "; no request paying a full connect (200 ms) or response (500 ms) timeout, not even "
                     "the first ones (connect_race and hedge.after set): none slower than 195 ms"
                     if want_fast else " (no connect_race, no hedge: slow first requests are expected)"))
        L.append("")
        fails = 0
        for f in faults:
            r, note = runs.get((f, p), (None, "not run"))
            if r is None:
                L.append("- %s: no result (%s)" % (f, note))
                fails += 1
                continue
            checks = []
            ok_all = r["ok"] == r["requests"] and r["requests"] > 0
            checks.append(("2xx %s%%" % pct2xx(r), ok_all))
            noisy = False
            if f != "none" and base.get(p) and r["steady"]["p99"] is not None:
                sp = r["steady"]["p99"]
                ratio = sp / base[p]
                if ratio <= TARGET_RATIO:
                    checks.append(("steady p99 x%.2f" % ratio, True))
                elif p in spread and sp <= spread[p][1]:
                    noisy = True
                    checks.append(("steady p99 x%.2f (%.1f ms, inside the no-fault spread %.1f-%.1f ms)"
                                   % (ratio, sp, spread[p][0], spread[p][1]), True))
                else:
                    checks.append(("steady p99 x%.2f" % ratio, False))
            if want_fast:
                n = timeout_paid(r)
                n150 = r["slow"].get("150", 0)
                if n is None:
                    checks.append(("%d slower than 150 ms (max %.1f ms)" % (n150, r["max"] or 0), n150 == 0))
                else:
                    checks.append(("%d slower than 195 ms, %d slower than 150 ms (max %.1f ms)"
                                   % (n, n150, r["max"] or 0), n == 0))
            bad = [c for c, ok in checks if not ok]
            fails += bool(bad)
            verdict = "FAIL" if bad else ("PASS (p99 within noise)" if noisy else "PASS")
            L.append("- %s: %s — %s" % (f, verdict,
                                        ", ".join(("**%s**" % c) if not ok else c for c, ok in checks)))
            if bad and r.get("slow_requests"):
                L.append("  first slow requests (start s, ms, status): " + ", ".join(
                    "%.3f/%.0f/%d" % (s["start_s"], s["ms"], s["status"]) for s in r["slow_requests"][:8]))
        L.append("")
        L.append("%s: %s" % (p, "every target met" if fails == 0 else "%d fault(s) miss a target" % fails))
        L.append("")

    text = "\n".join(L) + "\n"
    with open(a.out, "w") as fh:
        fh.write(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
