"""A tiny DNS server the test controls, for lifeline's `resolver` (SPEC §2): UDP on 127.0.0.1,
an ephemeral port, running on conftest's asyncio loop thread. Wire format written by hand
(python3-dnslib is not installed; the standard library is enough for A/AAAA answers).

    dns = DnsFake(loop_thread).start()
    dns.address                               "127.0.0.1:PORT", for resolver.servers
    dns.set("svc.test", ["127.0.0.1", "::1"])   the name's A and AAAA records (family by address)
    dns.set("svc.test", [])                   the name exists with no records (NOERROR, empty)
    dns.remove("svc.test")                    unknown again: NXDOMAIN
    dns.silence("svc.test")                   queries for it go unanswered (until set/remove)
    dns.count("svc.test")                     queries received for the name (A and AAAA)
    dns.wait_queries("svc.test", n, timeout)  blocks until n more queries than now arrived

Names compare case-insensitively. Answers use a compression pointer to the question for the
owner of every record, as real servers do. Unknown names are NXDOMAIN. Records may be changed from
the test thread at any time: the table sits behind a lock.
"""

import asyncio
import ipaddress
import socket
import struct
import threading
import time

TYPE_A, TYPE_AAAA = 1, 28


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, fake):
        self.fake = fake
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        reply = self.fake._answer(data)
        if reply is not None:
            self.transport.sendto(reply, addr)


class DnsFake:
    def __init__(self, lt, host="127.0.0.1"):
        self.lt = lt
        self.host = host
        self.port = None
        self._lock = threading.Lock()
        self._records = {}          # name -> [ip text]
        self._silent = set()
        self._counts = {}           # name -> queries seen
        self._transport = None

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    def start(self):
        async def go():
            loop = asyncio.get_running_loop()
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Proto(self), local_addr=(self.host, 0), family=socket.AF_INET)
            return transport
        self._transport = self.lt.run(go())
        self.port = self._transport.get_extra_info("sockname")[1]
        return self

    def stop(self):
        if self._transport is not None:
            self.lt.loop.call_soon_threadsafe(self._transport.close)
            self._transport = None

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

    def count(self, name):
        with self._lock:
            return self._counts.get(name.lower().rstrip("."), 0)

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

    def _answer(self, data):
        """Reply bytes for query `data`, or None (not a query we answer)."""
        if len(data) < 12:
            return None
        qid, flags, qd = struct.unpack(">HHH", data[:6])
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
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + 1
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
        return (struct.pack(">HHHHHH", qid, 0x8080 | rd, 1, len(answers), 0, 0) + question
                + b"".join(answers))
