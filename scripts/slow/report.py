"""report.py: slow-clients.sh's verdict (see that script for the arguments).

How a slow reader's cut is judged. lifeline's send_timeout runs from the last write that made
progress (client.c), not from the response start: a reader whose socket kept taking bytes for a
while (the kernel's buffers on both sides fill over the first seconds) is cut later than
send_timeout after the response start, and rightly so. The last moment lifeline could write is
approximated by what the reader saw (lifeline's send buffer mostly frees as the reader's side
takes bytes). So build/hostile notes, for each reader (by the X-Request-Id it sends, which lifeline logs as
the request id), when the bytes that had reached its socket (read + receive queue) last grew,
checked at each of its reads (every READ_S = 1 s, so up to 1 s after the fact). The stall starts at
the later of the response start (access log: duration minus the attempt's connect, response and
backoff times) and that last advance; a cut is
  - early when it comes less than send_timeout after the response start (nothing lifeline wrote
    can be later than that start: sound whatever the reader saw);
  - late when it comes more than send_timeout + SLACK after the stall start.
The stall start is an estimate, not a bound: lifeline's socket may take more bytes while nothing
more reaches the reader (its send buffer grows: seen in a DEFAULTS=1 run, readers with 96 KiB
written where most had 64 KiB, and no advance at the reader after its first byte), and each such
write restarts send_timeout. So late cuts, and readers that gave up (closed their side
send_timeout + hold_extra after their first byte) before lifeline cut them, are reported, not
failed; only an early cut (sound: nothing lifeline wrote is earlier than the response start) or no
cut at all fails. An exact judgement needs lifeline's own last-write time (the access log does not
carry it).
The advance may even come after the close (the kernel still sends what was queued before it):
that only shortens the measured stall, never makes a cut look late.
The old measure (response start -> close, which calls every reader whose socket kept taking bytes
late) is still printed beside it."""
import collections
import datetime
import json
import sys

h = json.load(open(sys.argv[1]))
ht, st, slack = float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
p_idle, p_load, factor = float(sys.argv[6]), float(sys.argv[7]), float(sys.argv[8])
rss0, rss_end, rss_max, strict = int(sys.argv[9]), int(sys.argv[10]), int(sys.argv[11]), sys.argv[12] == "1"
full = int(sys.argv[13])
after_slack = int(sys.argv[15])
# the open-loop prober's p99 (judged; wrk's is printed beside it: slow-clients.sh says why)
ol_idle, ol_load = float(sys.argv[16]), float(sys.argv[17])
fail = []


def q(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p * len(v)))] if v else 0


cuts = h["slowloris_cuts"]
cuts_conn = h.get("slowloris_cuts_conn") or cuts
# connect() start -> close can only overstate the time since lifeline's accept: judge "early" on it;
# connect completion -> close leaves out a wait in the accept queue (5,000 connects at once): "late"
early = [c for c in cuts if c < ht - 0.05]
late = [c for c in cuts_conn if c > ht + slack]
print("  slowloris: %d connections cut, %d answered 408 first; connect->close min %.2f p50 %.2f p99 %.2f max %.2f s "
      "(header_timeout %.1f s): %d early; from connect completion p50 %.2f p99 %.2f max %.2f s: %d late (> +%.1f s)" % (
          len(cuts), h["slowloris_408"], min(cuts or [0]), q(cuts, .5), q(cuts, .99), max(cuts or [0]), ht,
          len(early), q(cuts_conn, .5), q(cuts_conn, .99), max(cuts_conn or [0]), len(late), slack))
if not cuts or early or late:
    fail.append("slowloris cut times")
big = []
for line in open(sys.argv[2]):
    try:
        r = json.loads(line)
    except ValueError:
        continue
    if r.get("target") == "/big":
        big.append(r)
def since_head(r):
    """Seconds from the response head's arrival to the close: the duration minus every attempt's
    connect and response time and backoff (a retried request spent its first timeout waiting)."""
    spent = sum((a.get("connect_ms") or 0) + (a.get("response_ms") or 0) + (a.get("backoff_ms") or 0)
                for a in r.get("attempts") or [])
    return (r["duration_ms"] - spent) / 1000


def wall(r):
    return datetime.datetime.strptime(r["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


# readers still open when the run ended were closed by the client: not judged
answered = [r for r in big if r.get("attempts") and r["attempts"][-1]["outcome"] == "ok"]
# a retried request's timed-out attempt has no response_ms: its head time is unknown, not judged
retried = [r for r in answered if len(r["attempts"]) > 1]
answered = [r for r in answered if len(r["attempts"]) == 1]
ids = set(r["request_id"] for r in answered + retried)
other = collections.Counter("%s %s" % (r["status"], r.get("fallback")) for r in big if r["request_id"] not in ids)
print("  /big requests not answered by the upstream (it could not keep up; lifeline answered): %s; "
      "answered after a retry (not judged): %d" % (", ".join("%s x%d" % kv for kv in other.most_common()) or "none",
                                                    len(retried)))
started = [r for r in answered if r.get("bytes", 0) > 0 and wall(r) < h["t_wall_end"] - 0.2]
hold = st + h["hold_extra"] - 0.3
cut = [r for r in started if r["bytes"] < full and since_head(r) < hold]
gave_up = [r for r in started if r["bytes"] < full and since_head(r) >= hold]
dc = [since_head(r) for r in cut]
early = [x for x in dc if x < st - 0.05]
late_from_start = [x for x in dc if x > st + slack]
rm = h.get("reader_marks") or []
marks = {"hostile-rd-%d" % int(rm[i]): (rm[i + 1], rm[i + 2]) for i in range(0, len(rm) - 2, 3)}
stall = []          # close - stall start, for the cut readers whose marks are known
for r in cut:
    m = marks.get(r.get("request_id"))
    if m is None:
        continue
    close = wall(r)
    start = close - since_head(r)
    stall.append(close - max(start, m[1]))
late = [x for x in stall if x > st + slack]
# A reader that gave up first (it holds until send_timeout + hold_extra after its first byte) was
# due a cut only if send_timeout + SLACK had passed since its stall start by then.
missed, gave_up_early = [], 0
for r in gave_up:
    m = marks.get(r.get("request_id"))
    close = wall(r)
    start = close - since_head(r)
    if m is None:
        missed.append(r)   # unknown stall start: judged from the response start, as before
    elif m[0] + st + h["hold_extra"] - max(start, m[1]) > st + slack:
        missed.append(r)
    else:
        gave_up_early += 1
print("  slow readers: %d /big requests logged, %d began (bytes > 0) and ended before the run did: %d closed by "
      "lifeline, %d by the reader first (%.1f s after the response start): %d of them after send_timeout + %.1f s "
      "from their stall start (reported: see the header), %d before" % (
          len(big), len(started), len(cut), len(gave_up), hold, len(missed), slack, gave_up_early))
if started and not cut:
    fail.append("slow readers not cut")
print("  slow readers: %d /big requests logged, %d cut short (bytes < body); response start->close min %.2f p50 %.2f p99 %.2f "
      "max %.2f s (send_timeout %.1f s): %d early, %d past +%.1f s; bytes sent before the cut p50 %d" % (
          len(big), len(cut), min(dc or [0]), q(dc, .5), q(dc, .99), max(dc or [0]), st, len(early), len(late_from_start),
          slack, q([r.get("bytes", 0) for r in cut], .5)))
print("  slow readers, from the stall start (the later of the response start and the reader's last advance; %d of %d "
      "cut readers matched by request id): close after min %.2f p50 %.2f p99 %.2f max %.2f s: %d late (> send_timeout "
      "+%.1f s); from the response start alone %d would look late" % (
          len(stall), len(cut), min(stall or [0]), q(stall, .5), q(stall, .99), max(stall or [0]), len(late), slack,
          len(late_from_start)))
print("  slow readers opened: %d; client errors: %s" % (h["readers_opened"], h["errors"] or "none"))
if not cut or early or len(stall) < len(cut) // 2:
    fail.append("slow reader cut times")
s = h["samples"]
rss = [x[1] for x in s]
fds = [x[2] for x in s]
print("  lifeline VmRSS: before %d KiB, under attack p50 %d max %d KiB, after %d KiB; fds max %d; "
      "client-side open max %d slowloris + %d readers" % (
          rss0, q(rss, .5), max(rss), rss_end, max(fds), max(x[3] for x in s), max(x[4] for x in s)))
def lp99(path):
    v = []
    for line in open(path):
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if r.get("target") == "/" and r.get("status") != 408:
            v.append(r["duration_ms"])   # (a slowloris head for `/` cut by header_timeout is no client's answer)
    return q(v, .99), len(v)


li, ni = lp99(sys.argv[14])
ll, nl = lp99(sys.argv[2])
print("  lifeline's own view of the normal client (access log duration_ms, p99): unloaded %.3f ms (%d requests), "
      "under attack %.3f ms (%d requests)" % (li, ni, ll, nl))
cpu = [x[5] for x in s[2:]]
print("  lifeline CPU under attack (one worker): p50 %.0f%% max %.0f%% of a core" % (q(cpu, .5), max(cpu or [0])))
if max(rss) > rss_max * 1024:
    fail.append("RSS above %d MiB" % rss_max)
print("  lifeline VmRSS after the attack: %d KiB (unloaded %d KiB + %d KiB; allowed + %d MiB)" % (
    rss_end, rss0, rss_end - rss0, after_slack))
if rss_end > rss0 + after_slack * 1024:
    fail.append("RSS not handed back after the attack")
ratio = p_load / p_idle if p_idle > 0 else float("inf")
ol_ratio = ol_load / ol_idle if ol_idle > 0 else float("inf")
verdict = "PASS" if ol_ratio <= factor else "FAIL"
print("  normal client p99, wrk (closed-loop, full throttle, not judged): unloaded %.3f ms, under attack %.3f ms: x%.2f" % (
    p_idle, p_load, ratio))
print("  normal client p99, open-loop: unloaded %.3f ms, under attack %.3f ms: x%.2f (target <= x%.1f: %s)" % (
    ol_idle, ol_load, ol_ratio, factor, verdict))
if verdict == "FAIL" and strict:
    fail.append("p99")
print("RESULT p99_idle_ms=%.3f p99_loaded_ms=%.3f ratio=%.2f ol_p99_idle_ms=%.3f ol_p99_loaded_ms=%.3f ol_ratio=%.2f "
      "slowloris_cuts=%d reader_cuts=%d rss_max_kib=%d "
      "rss_after_kib=%d %s" % (p_idle, p_load, ratio, ol_idle, ol_load, ol_ratio, len(cuts), len(cut), max(rss), rss_end,
                               "FAIL: " + ", ".join(fail) if fail else "PASS"))
sys.exit(1 if fail else 0)
