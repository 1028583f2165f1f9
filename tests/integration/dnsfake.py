"""A tiny DNS server the test controls, for lifeline's `resolver` (SPEC §2): UDP and TCP on
127.0.0.1, one ephemeral port, running on conftest's asyncio loop thread. Wire format written by
hand (python3-dnslib is not installed; the standard library is enough for A/AAAA answers).

    dns = DnsFake(loop_thread).start()
    dns = DnsFake(loop_thread, truncate=True).start()
                                              truncating mode: a UDP answer larger than the query
                                              allows (512 bytes, or the payload size of its EDNS
                                              OPT record) is sent with TC=1 and no records, as real
                                              servers do; TCP answers in full
    dns = DnsFake(loop_thread, truncate=512).start()
    dns = DnsFake(loop_thread, port=53).start()   a fixed port (in a network namespace of the test's own)
                                              the same, with this UDP limit whatever EDNS offers
                                              (a server configured for small UDP answers)
    dns.address                               "127.0.0.1:PORT", for resolver.servers
    dns.set("svc.test", ["127.0.0.1", "::1"])   the name's A and AAAA records (family by address)
    dns.set("svc.test", [])                   the name exists with no records (NOERROR, empty)
    dns.remove("svc.test")                    unknown again: NXDOMAIN
    dns.silence("svc.test")                   queries for it go unanswered (until set/remove)
    dns.delay("svc.test", 0.25)               its answers leave 0.25 s after the query (0: at once);
                                              kept across set/remove
    dns.delay("svc.test", 0.5, tcp=True)      the same for its answers over TCP only (UDP at once)
    dns.count("svc.test")                     queries received for the name (A and AAAA)
    dns.tcp_count("svc.test")                 of which over TCP
    dns.wait_queries("svc.test", n, timeout)  blocks until n more queries than now arrived

Names compare case-insensitively. Answers use a compression pointer to the question for the
owner of every record, as real servers do. Unknown names are NXDOMAIN. Without truncating mode an
answer of any size goes over UDP (no limit is checked). Records may be changed from the test
thread at any time: the table sits behind a lock.
"""

import asyncio
import ipaddress
import socket
import struct
import threading
import time

TYPE_A, TYPE_AAAA, TYPE_OPT = 1, 28, 41


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, fake):
        self.fake = fake
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        reply = self.fake._answer(data, tcp=False)
        if reply is None:
            return
        delay = self.fake._delay_of(data)
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self._send, reply, addr)
        else:
            self._send(reply, addr)

    def _send(self, reply, addr):
        if not self.transport.is_closing():
            self.transport.sendto(reply, addr)


class DnsFake:
    def __init__(self, lt, host="127.0.0.1", truncate=False, port=0):
        self.lt = lt
        self.host = host
        self.port = None
        self.want_port = port       # 0: an ephemeral one
        self.truncate = truncate    # False, True (512 or the EDNS size) or a fixed UDP limit
        self._lock = threading.Lock()
        self._records = {}          # name -> [ip text]
        self._silent = set()
        self._delays = {}           # name -> seconds before its answers leave
        self._tcp_delays = {}       # name -> the same, for answers over TCP only
        self._counts = {}           # name -> queries seen
        self._tcp_counts = {}       # name -> queries seen over TCP
        self._transport = None
        self._tcp_server = None
        self._tcp_tasks = set()

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    def start(self):
        async def go():
            loop = asyncio.get_running_loop()
            for _ in range(20):         # a UDP port whose number is also free for TCP
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Proto(self), local_addr=(self.host, self.want_port), family=socket.AF_INET)
                port = transport.get_extra_info("sockname")[1]
                try:
                    server = await asyncio.start_server(self._on_tcp, self.host, port)
                except OSError:
                    transport.close()
                    continue
                return transport, server
            raise OSError("no port free for both UDP and TCP")
        self._transport, self._tcp_server = self.lt.run(go())
        self.port = self._transport.get_extra_info("sockname")[1]
        return self

    def stop(self):
        async def go():
            if self._tcp_server is not None:
                self._tcp_server.close()
            for x in list(self._tcp_tasks):
                x.cancel()
            if self._transport is not None:
                self._transport.close()
        if self._transport is not None or self._tcp_server is not None:
            try:
                self.lt.run(go(), timeout=5)
            except Exception:
                pass
            self._transport = self._tcp_server = None

    async def _on_tcp(self, reader, writer):
        """Length-prefixed queries on one connection (RFC 1035 §4.2.2), answered in order."""
        self._tcp_tasks.add(asyncio.current_task())
        try:
            while True:
                n = struct.unpack(">H", await reader.readexactly(2))[0]
                query = await reader.readexactly(n)
                reply = self._answer(query, tcp=True)
                delay = self._delay_of(query, tcp=True)
                if reply is not None and delay > 0:
                    await asyncio.sleep(delay)
                if reply is not None:
                    writer.write(struct.pack(">H", len(reply)) + reply)
                    await writer.drain()
        except (asyncio.CancelledError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._tcp_tasks.discard(asyncio.current_task())
            writer.close()

    # ---- control, from the test thread ----

    def set(self, name, ips):
        for ip in ips:
            ipaddress.ip_address(ip)            # a typo fails here, not as a missing record
        with self._lock:
            self._records[name.lower().rstrip(".")] = list(ips)
            self._silent.discard(name.lower().rstrip("."))

    def remove(self, name):
        with self._lock:
            self._records.pop(name.lower().rstrip("."), None)
            self._silent.discard(name.lower().rstrip("."))

    def silence(self, name):
        with self._lock:
            self._silent.add(name.lower().rstrip("."))

    def delay(self, name, seconds, tcp=False):
        with self._lock:
            (self._tcp_delays if tcp else self._delays)[name.lower().rstrip(".")] = float(seconds)

    def count(self, name):
        with self._lock:
            return self._counts.get(name.lower().rstrip("."), 0)

    def tcp_count(self, name):
        with self._lock:
            return self._tcp_counts.get(name.lower().rstrip("."), 0)

    def wait_queries(self, name, more, timeout):
        """Waits until `more` queries for name arrived after this call; False on timeout."""
        target = self.count(name) + more
        deadline = time.monotonic() + timeout
        while self.count(name) < target:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    # ---- the server, on the loop thread ----

    def _delay_of(self, data, tcp=False):
        """Seconds before the answer to query `data` leaves (0 for a name without a delay)."""
        off, labels = 12, []
        while off < len(data) and data[off] and not data[off] & 0xC0:
            labels.append(data[off + 1:off + 1 + data[off]].decode("ascii", "replace"))
            off += 1 + data[off]
        name = ".".join(labels).lower()
        with self._lock:
            return self._delays.get(name, 0.0) + (self._tcp_delays.get(name, 0.0) if tcp else 0.0)

    def _answer(self, data, tcp):
        """Reply bytes for query `data`, or None (not a query we answer)."""
        if len(data) < 12:
            return None
        qid, flags, qd, _, _, ar = struct.unpack(">HHHHHH", data[:12])
        if flags & 0x8000 or qd != 1:
            return None
        off, labels = 12, []
        while True:
            if off >= len(data):
                return None
            n = data[off]
            if n == 0:
                off += 1
                break
            if n & 0xC0 or off + 1 + n > len(data):
                return None
            labels.append(data[off + 1:off + 1 + n].decode("ascii", "replace"))
            off += 1 + n
        if off + 4 > len(data):
            return None
        qtype, qclass = struct.unpack(">HH", data[off:off + 4])
        question = data[12:off + 4]
        name = ".".join(labels).lower()
        udp_max = 512               # RFC 1035; an EDNS OPT record right after the question raises it
        opt = data[off + 4:off + 4 + 11]
        if ar >= 1 and len(opt) == 11 and opt[0] == 0 and struct.unpack(">H", opt[1:3])[0] == TYPE_OPT:
            udp_max = max(udp_max, struct.unpack(">H", opt[3:5])[0])
        if self.truncate is not True and self.truncate:
            udp_max = int(self.truncate)
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + 1
            if tcp:
                self._tcp_counts[name] = self._tcp_counts.get(name, 0) + 1
            if name in self._silent:
                return None
            ips = self._records.get(name)
        rd = flags & 0x0100
        if ips is None:
            return struct.pack(">HHHHHH", qid, 0x8080 | rd | 3, 1, 0, 0, 0) + question
        answers = []
        for ip in ips:
            a = ipaddress.ip_address(ip)
            t = TYPE_A if a.version == 4 else TYPE_AAAA
            if t != qtype or qclass != 1:
                continue
            answers.append(struct.pack(">HHHIH", 0xC00C, t, 1, 1, len(a.packed)) + a.packed)
        reply = (struct.pack(">HHHHHH", qid, 0x8080 | rd, 1, len(answers), 0, 0) + question
                 + b"".join(answers))
        if self.truncate and not tcp and len(reply) > udp_max:
            # TC set, no records: the client asks again over TCP
            return struct.pack(">HHHHHH", qid, 0x8080 | 0x0200 | rd, 1, 0, 0, 0) + question
        return reply
