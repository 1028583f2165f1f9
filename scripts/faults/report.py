#!/usr/bin/env python3
"""report.py — the markdown report of scripts/bench-faults.sh from the load.py JSON files.

--runs TSV (round, fault, proxy, json, note per line, a header first), --out FILE (also printed on
stdout), --baseline-dir DIR (none-PROXY.json kept from an earlier run, used for the req/s targets
when this run has no `none` fault), --header LINE (repeatable), --steady S (the window the steady
p99 is taken over starts at S s), --strict (exit 2 when a target is missed).

Every (fault, proxy) pair ran once per round; the report quotes medians over rounds for req/s and
latencies, and totals over rounds for the 2xx share and the requests that paid a full timeout.
"""

import argparse
import json
import os
import statistics
import sys
import time

FAULT_TEXT = {
    "none": "three good servers (baseline)",
    "refused": "bad port has no listener: connect refused at once",
    "blackhole": "bad port drops SYNs (backlog-0 listener with a full accept queue): connect hangs",
    "silent": "bad server accepts and reads, never answers",
    "503": "bad server answers 503 at once",
    "slow": "bad server answers every request correctly, 150 ms late",
}
# a request "paid a full timeout" when it is slower than the timeout the fault can make a proxy wait
# for, less 5 ms: the connect timeout (200 ms) where the bad server's connect fails or hangs (and in
# the faults where no timeout should fire at all), the response timeout (500 ms) where it connects
# and answers late or never
PAID_MS = {"none": 195, "refused": 195, "blackhole": 195, "503": 195, "silent": 495, "slow": 495}
PAID_WHY = {195: "connect 200 ms", 495: "response 500 ms"}
# the targets: variant -> (req/s under a fault >= this x its own no-fault req/s,
#                                   timeouts paid: "nginx" = no more than nginx in the same fault, 0 = none)
TARGETS = {"lifeline-defaults": (0.8, "nginx"), "lifeline-tuned": (0.9, 0)}


def fmt(v, p=1):
    return "—" if v is None else f"{v:,.{p}f}"


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def paid_of(r, f):
    """requests of one run slower than the fault's timeout threshold (None: not measured)"""
    thr = str(PAID_MS.get(f, 195))
    if thr in r["slow"]:
        return r["slow"][thr]
    lst = r.get("slow_requests", [])
    if len(lst) == r["slow"].get("150", -1):
        return sum(1 for x in lst if x["ms"] > PAID_MS.get(f, 195))
    return None


class Agg:
    """one (fault, proxy) pair over its rounds"""

    def __init__(self, f, p, runs):
        self.f, self.p = f, p
        self.runs = [r for r, _ in runs if r is not None]
        self.notes = [n for _, n in runs if n]
        self.missing = sum(1 for r, _ in runs if r is None)
        rs = self.runs
        self.n = len(rs)
        self.requests = sum(r["requests"] for r in rs)
        self.ok = sum(r["ok"] for r in rs)
        self.rps = med([r["rps"] for r in rs])
        self.p50 = med([r["p50"] for r in rs])
        self.p99 = med([r["p99"] for r in rs])
        self.max = max((r["max"] for r in rs if r["max"] is not None), default=None)
        self.steady_p99 = med([r["steady"]["p99"] for r in rs])
        self.first_max = max((r["first_second"]["max"] for r in rs if r["first_second"]["max"] is not None),
                             default=None)
        paid = [paid_of(r, f) for r in rs]
        self.paid_rounds = paid
        self.paid = None if (not rs or any(x is None for x in paid)) else sum(paid)
        self.rps_rounds = [r["rps"] for r in rs]

    def pct2xx(self):
        if not self.requests:
            return "—"
        if self.ok == self.requests:
            return "100"
        return "%.3f" % (100.0 * self.ok / self.requests)

    def paid_text(self):
        if self.paid is None:
            return "—"
        if self.n > 1:
            return "%d (%s)" % (self.paid, "/".join(str(x) for x in self.paid_rounds))
        return str(self.paid)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--baseline-dir")
    ap.add_argument("--header", action="append", default=[])
    ap.add_argument("--steady", type=float, default=3.0)
    ap.add_argument("--strict", action="store_true")
    a = ap.parse_args()

    raw, faults, proxies, rounds = {}, [], [], set()
    for line in open(a.runs).read().splitlines()[1:]:
        rnd, f, p, js, note = (line.split("\t") + [""] * 5)[:5]
        r = None
        if js:
            try:
                r = json.load(open(js))
            except (OSError, ValueError) as e:
                note = (note + "; " if note else "") + "unreadable result: %s" % e
        raw.setdefault((f, p), []).append((r, ("round %s: %s" % (rnd, note)) if note else ""))
        rounds.add(rnd)
        if f not in faults:
            faults.append(f)
        if p not in proxies:
            proxies.append(p)
    agg = {k: Agg(k[0], k[1], v) for k, v in raw.items()}

    # no-fault req/s per proxy: this run's median, else the kept one
    base, base_note = {}, {}
    for p in proxies:
        g = agg.get(("none", p))
        if g and g.rps:
            base[p] = g.rps
        elif a.baseline_dir:
            path = os.path.join(a.baseline_dir, "none-%s.json" % p)
            try:
                base[p] = json.load(open(path))["rps"]
                base_note[p] = "no-fault req/s of %s from an earlier run (%s)" % (
                    p, time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(path))))
            except (OSError, ValueError, KeyError):
                pass

    nr = len(rounds)
    L = ["## lifeline fault benchmark, %s" % time.strftime("%Y-%m-%d %H:%M"), ""]
    for h in a.header:
        L.append("- " + h)
    L.append("- pool of three, the bad server listed first; connect 200ms, response 500ms for every proxy "
             "(see scripts/bench-faults.sh for each one's configuration); %d round(s), interleaved: "
             "req/s and latencies are medians over rounds, 2xx %% and timeouts paid are totals" % nr)
    L.append("- latencies in ms over every request (no coordinated-omission correction); timeouts paid: "
             "requests slower than 195 ms (a connect timeout, 200 ms) in none/refused/blackhole/503, "
             "slower than 495 ms (a response timeout, 500 ms) in silent/slow (per round in brackets); "
             "steady p99: requests started after %g s; 1st s max: slowest request started in the first "
             "second (worst round)" % a.steady)
    for n in base_note.values():
        L.append("- " + n)
    L.append("")

    # ---- per fault: the details ----
    for f in faults:
        L.append("### %s — %s" % (f, FAULT_TEXT.get(f, f)))
        L.append("")
        L.append("| proxy | req/s | 2xx % | timeouts paid | p50 | p99 | max | steady p99 | 1st s max |")
        L.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        extra = []
        for p in proxies:
            g = agg.get((f, p))
            if g is None:
                continue
            if not g.n:
                L.append("| %s | no result |  |  |  |  |  |  |  |" % p)
            else:
                L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                    p, fmt(g.rps, 0), g.pct2xx(), g.paid_text(), fmt(g.p50, 2), fmt(g.p99, 2),
                    fmt(g.max, 1), fmt(g.steady_p99, 2), fmt(g.first_max, 1)))
            parts = []
            statuses, errors, fallbacks, stall = {}, {}, {}, 0.0
            for r in g.runs:
                for k, v in r["statuses"].items():
                    if not k.startswith("2"):
                        statuses[k] = statuses.get(k, 0) + v
                for k, v in r["errors"].items():
                    errors[k] = errors.get(k, 0) + v
                for k, v in (r.get("fallbacks") or {}).items():
                    fallbacks[k] = fallbacks.get(k, 0) + v
                stall = max(stall, r.get("client_stall_max_ms", 0) or 0)
            if stall >= 50:
                parts.append("the load client itself stalled up to %.0f ms: slow requests around then may "
                             "be the machine, not the proxy" % stall)
            if statuses:
                parts.append("non-2xx: " + ", ".join("%s x%d" % (k if k != "0" else "error", v)
                                                     for k, v in sorted(statuses.items())))
            if fallbacks:
                parts.append("x-lifeline-fallback: " + ", ".join("%s x%d" % kv for kv in sorted(fallbacks.items())))
            if errors:
                parts.append("client errors: " + ", ".join("%s x%d" % kv for kv in sorted(errors.items())))
            if g.n > 1:
                parts.append("req/s per round: " + "/".join(fmt(x, 0) for x in g.rps_rounds))
            parts.extend(g.notes)
            if parts and (statuses or errors or g.notes or stall >= 50 or g.n > 1):
                extra.append("- %s: %s" % (p, "; ".join(parts)))
        L.append("")
        if extra:
            L.extend(extra)
            L.append("")

    # ---- the final table ----
    L.append("### summary (medians over %d round(s))" % nr)
    L.append("")
    L.append("| fault | proxy | 2xx % | timeouts paid | req/s | x no-fault | p99 ms |")
    L.append("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for f in faults:
        for p in proxies:
            g = agg.get((f, p))
            if g is None:
                continue
            ratio = "%.2f" % (g.rps / base[p]) if g.rps and base.get(p) else "—"
            L.append("| %s | %s | %s | %s | %s | %s | %s |" % (
                f, p, g.pct2xx(), "—" if g.paid is None else g.paid, fmt(g.rps, 0), ratio, fmt(g.p99, 2)))
    L.append("")

    # ---- the targets ----
    fails = 0
    for p, (need, paid_rule) in TARGETS.items():
        if p not in proxies:
            continue
        L.append("### targets: %s" % p)
        L.append("")
        L.append("100%% 2xx in every fault; %s; req/s under each fault >= %.1fx its own no-fault req/s "
                 "(medians). Informational unless --strict." % (
                     "no more requests paying a full timeout than nginx in the same fault (totals over rounds)"
                     if paid_rule == "nginx" else "no request paying a full timeout", need))
        L.append("")
        L.append("| fault | 100% 2xx | timeouts paid | req/s vs no-fault | verdict |")
        L.append("| --- | --- | --- | --- | --- |")
        pf = 0
        for f in faults:
            g = agg.get((f, p))
            if g is None or not g.n:
                L.append("| %s | no result | | | FAIL |" % f)
                pf += 1
                continue
            cells, bad = [], False
            ok = g.requests > 0 and g.ok == g.requests
            bad |= not ok
            cells.append("%s%% %s" % (g.pct2xx(), "PASS" if ok else "FAIL"))
            if paid_rule == "nginx":
                ng = agg.get((f, "nginx"))
                if g.paid is None:
                    cells.append("— FAIL (not measured)")
                    bad = True
                elif ng is None or ng.paid is None or not ng.n:
                    cells.append("%d (no nginx run: not checked)" % g.paid)
                else:
                    c = g.paid <= ng.paid
                    bad |= not c
                    cells.append("%d %s nginx %d %s" % (g.paid, "<=" if c else ">", ng.paid, "PASS" if c else "FAIL"))
            else:
                c = g.paid == 0
                bad |= not c
                cells.append("%s %s" % ("—" if g.paid is None else g.paid, "PASS" if c else "FAIL"))
            if f == "none":
                cells.append("(the baseline: %s req/s)" % fmt(g.rps, 0))
            elif not base.get(p) or g.rps is None:
                cells.append("no no-fault req/s: not checked")
            else:
                c = g.rps >= need * base[p]
                bad |= not c
                cells.append("%s / %s = %.2f %s %.1f %s" % (fmt(g.rps, 0), fmt(base[p], 0), g.rps / base[p],
                                                           ">=" if c else "<", need, "PASS" if c else "FAIL"))
            pf += bad
            L.append("| %s | %s | %s |" % (f, " | ".join(cells), "FAIL" if bad else "PASS"))
        L.append("")
        L.append("%s: %s" % (p, "every target met (PASS)" if pf == 0 else "FAIL: %d fault(s) miss a target" % pf))
        L.append("")
        fails += pf

    text = "\n".join(L) + "\n"
    with open(a.out, "w") as fh:
        fh.write(text)
    sys.stdout.write(text)
    return 2 if (a.strict and fails) else 0


if __name__ == "__main__":
    sys.exit(main())
