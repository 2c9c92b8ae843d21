#!/usr/bin/env python3
"""UDP traffic probe for the shm datapath tests (tests/shm_*.rs).

Blocking sockets without settimeout by default (no select/poll/epoll: what the shm datapath serves
without the poll/epoll layer); --timeout T uses settimeout(T), so every wait is a poll(). Every run is bounded by signal.alarm (--deadline), so a lost datagram makes
the probe fail instead of hanging.

Datagram format (data): the payload of sequence number `seq` from sender `sid` is fully
determined by (seed, sid, seq):

    size  = sizes(seed, sid)[seq]                       (the --sizes schedule)
    full  = header + body[:size-16]  when size >= 16    header = b"SHMT" + <sid, seq, crc32(body)>
    full  = header[:size]            when size < 16     (short: identified by arrival order)

so the receiver regenerates the expected bytes of every datagram and compares them exactly
(which also checks the crc32 in the header). Control datagrams:

    b"ACK!" + <sid, k-1>     receiver -> sender: k datagrams of sender sid arrived (flow control;
                              sent when k is a multiple of the window, or the count)
    b"STOP"                   anyone -> receiver/echo: exit cleanly now

Modes (one JSON line on stdout at exit; progress lines start with '#'):

  recv   --bind IP:PORT [--count N --senders K] [--stop] [--ack W [--ack-seq]] [--strict] [--fork]
         [--reuseport] [--rcvbuf BYTES] [--sizes SPEC --seed S] [--api recvfrom|recvmsg]
         --api recvmsg receives with recvmsg() (no control buffer) and checks MSG_TRUNC is clear.
         Exits after N datagrams from each of K senders (sender ids 0..K-1 unless --ids),
         or at STOP (--stop). Exit status 1 if anything was corrupt, duplicated or out of order.
         Without --count a receiver acknowledges full windows only: senders to it must send a
         multiple of the window.
  send   --dest IP:PORT [--count N | --loop] [--id I] [--window W] [--bind IP:PORT]
         [--connect] [--pace-us U] [--sizes SPEC --seed S] [--report-registry]
         With --window W, waits for the receiver's ACK after every W datagrams.
  echo   --bind IP:PORT: sends every datagram back to its source until STOP.
  rings  --sockets IP:PORT,IP:PORT,... [--thread-last] [--cpu C]: binds one socket per address
         (the last one in a second thread with --thread-last), prints '# ready', then receives
         exactly one datagram on each and checks it says b"to-<port>".
  perm   --paths P1,P2,...: tries to list/open each path; prints what happened.

SPEC: "A-B" (uniform sizes in [A, B]) or "a,b,c" (cycled), e.g. "0-1472" or "4000,60000".
"""

import argparse
import json
import os
import random
import signal
import socket
import struct
import sys
import threading
import time
import zlib

MAGIC = b"SHMT"
HDR = struct.Struct("<4sIII")  # magic, sid, seq, crc32(body)
ACK = b"ACK!"
ACK_S = struct.Struct("<4sII")
STOP = b"STOP"

_BLOCK = random.Random(12345).randbytes(1 << 17)


def addr(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)


class Sizes:
    """The size of datagram `seq` of sender `sid`: a cheap deterministic hash of (seed, sid, seq)."""

    def __init__(self, spec, seed, sid):
        self.key = (seed * 0x9E3779B1 + sid * 0x85EBCA77) & 0xFFFFFFFF
        if "-" in spec and "," not in spec:
            lo, hi = (int(x) for x in spec.split("-"))
            self.lo, self.span, self.vals = lo, hi - lo + 1, None
        else:
            self.vals = [int(x) for x in spec.split(",")]

    def __getitem__(self, seq):
        if self.vals is not None:
            return self.vals[seq % len(self.vals)]
        x = (self.key ^ (seq * 0xC2B2AE3D)) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x2C1B3C6D) & 0xFFFFFFFF
        x ^= x >> 12
        x = (x * 0x297A2D39) & 0xFFFFFFFF
        x ^= x >> 15
        return self.lo + x % self.span


def payload(sid, seq, size):
    off = (seq * 7919 + sid * 104729) % (len(_BLOCK) - 65536)
    body = _BLOCK[off : off + max(0, size - HDR.size)]
    head = HDR.pack(MAGIC, sid, seq, zlib.crc32(body))
    if size < HDR.size:
        return head[:size]
    return head + body


def out(obj):
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def note(msg):
    sys.stdout.write("# %s\n" % msg)
    sys.stdout.flush()


class Deadline(Exception):
    pass


def arm_deadline(secs):
    def on_alarm(signum, frame):
        raise Deadline("deadline of %ss reached" % secs)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(secs))


TIMEOUT = None


SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


def udp_socket(reuseport=False, rcvbuf=0):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if reuseport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if rcvbuf:
        # Room for every window in flight: the window protocol cannot recover a datagram the
        # kernel drops for want of buffer (Udp RcvbufErrors). FORCE: past net.core.rmem_max.
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if TIMEOUT is not None:
        # settimeout: CPython then waits in poll() before every receive (the mux path).
        s.settimeout(TIMEOUT)
    return s


def ranges(seqs):
    """[[a, b], ...] inclusive runs of a sorted list."""
    r = []
    for x in sorted(seqs):
        if r and r[-1][1] + 1 == x:
            r[-1][1] = x
        else:
            r.append([x, x])
    return r


# ---------------------------------------------------------------------------------------------
# recv


def cmd_recv(a):
    s = udp_socket(a.reuseport, a.rcvbuf)
    s.bind(addr(a.bind))
    role = "parent"
    child = None
    if a.fork:
        child = os.fork()
        if child == 0:
            role = "child"
    note("ready %s %s pid %d" % (role, s.getsockname(), os.getpid()))
    ids = [int(x) for x in a.ids.split(",")] if a.ids else list(range(a.senders))
    sched = {}

    def sizes(sid):
        if sid not in sched:
            sched[sid] = Sizes(a.sizes, a.seed, sid)
        return sched[sid]

    got = {}  # sid -> set of seqs
    last = {}  # source address -> last seq (for --strict and short datagrams)
    src_of = {}  # sid -> set of source addresses
    bad = []
    bad_count = dups = total = nbytes = short = 0
    stops = 0
    first_from = set()
    buf = bytearray(70000)
    done = lambda: a.count and all(len(got.get(i, ())) >= a.count for i in ids)
    error = None
    try:
        while not done():
            if a.api == "recvmsg":
                d, _anc, flags, src = s.recvmsg(len(buf))
                n = len(d)
                if flags & socket.MSG_TRUNC:
                    raise RuntimeError(f"recvmsg flags {flags:#x}: MSG_TRUNC on a {n}-byte datagram")
            else:
                n, src = s.recvfrom_into(buf)
                d = bytes(buf[:n])
            if d == STOP:
                stops += 1
                if a.stop:
                    break
                continue
            total += 1
            nbytes += n
            if n >= HDR.size and d[:4] == MAGIC:
                _, sid, seq, crc = HDR.unpack_from(d)
            elif n < HDR.size and src in last:
                # Short datagram: only its arrival order says which one it is.
                short += 1
                sid, seq = last[src][0], last[src][1] + 1
            elif n < HDR.size and len(ids) == 1:
                short += 1
                sid, seq = ids[0], 0
            else:
                bad_count += 1
                if len(bad) < 10:
                    bad.append("unrecognised %d bytes from %s: %s" % (n, src, d[:32].hex()))
                continue
            sz = sizes(sid)
            if (a.count and seq >= a.count) or (a.ids and sid not in ids):
                bad_count += 1
                if len(bad) < 10:
                    bad.append("unexpected sender %d seq %d (%d bytes)" % (sid, seq, n))
                continue
            exp = payload(sid, seq, sz[seq])
            if d != exp:
                bad_count += 1
                if len(bad) < 10:
                    bad.append(
                        "sender %d seq %d: got %d bytes, expected %d; crc %s"
                        % (sid, seq, n, len(exp), "ok" if n >= 16 and zlib.crc32(d[16:]) == HDR.unpack_from(d)[3] else "BAD")
                    )
                continue
            if a.strict and (last[src][1] if src in last else -1) + 1 != seq:
                bad_count += 1
                if len(bad) < 10:
                    bad.append("out of order from %s: seq %d after %d" % (src, seq, last.get(src, (0, -1))[1]))
            last[src] = (sid, seq)
            seqs = got.setdefault(sid, set())
            if seq in seqs:
                dups += 1
                if len(bad) < 10:
                    bad.append("duplicate: sender %d seq %d" % (sid, seq))
            seqs.add(seq)
            src_of.setdefault(sid, set()).add("%s:%d" % src)
            if sid not in first_from:
                first_from.add(sid)
                note("first from %d" % sid)
            # Acknowledge by count, not by sequence number: with two roads (ring and kernel) a
            # window's last datagram may overtake the others, which are still on their way.
            # --ack-seq (forked receivers: each process counts only its own share): by the
            # window's last sequence number, which is right as long as there is one road.
            k = seq + 1 if a.ack_seq else len(seqs)
            if a.ack and (k % a.ack == 0 or (a.count and k == a.count)):
                s.sendto(ACK_S.pack(ACK, sid, k - 1), src)
            if a.progress and total % a.progress == 0:
                note("received %d" % total)
    except (Deadline, socket.timeout) as e:
        error = "%s: %s" % (type(e).__name__, e)
    signal.alarm(0)
    if child:
        os.waitpid(child, 0)
    res = {
        "mode": "recv",
        "role": role,
        "pid": os.getpid(),
        "received": total,
        "bytes": nbytes,
        "short": short,
        "bad": bad_count,
        "bad_samples": bad,
        "dups": dups,
        "stops": stops,
        "senders": {str(k): {"n": len(v), "ranges": ranges(v)} for k, v in got.items()},
        "sources": {str(k): sorted(v) for k, v in src_of.items()},
        "error": error,
    }
    out(res)
    s.close()
    return 1 if (bad_count or dups or error) else 0


# ---------------------------------------------------------------------------------------------
# send


def cmd_send(a):
    s = udp_socket()
    if a.bind:
        s.bind(addr(a.bind))
    dest = addr(a.dest)
    if a.connect:
        s.connect(dest)
    n = a.count if not a.loop else a.max_seq
    sz = Sizes(a.sizes, a.seed, a.id)
    stop = [False]

    def on_term(signum, frame):
        stop[0] = True
        raise Deadline("terminated")

    signal.signal(signal.SIGTERM, on_term)
    sent = nbytes = acks = 0
    error = None
    buf = bytearray(64)
    try:
        for seq in range(n):
            d = payload(a.id, seq, sz[seq])
            if a.connect:
                s.send(d)
            else:
                s.sendto(d, dest)
            sent += 1
            nbytes += len(d)
            if sent == 1:
                note("sending from %s" % (s.getsockname(),))
            if a.window and ((seq + 1) % a.window == 0 or seq == n - 1):
                while True:
                    k, src = s.recvfrom_into(buf)
                    if k == ACK_S.size and buf[:4] == ACK:
                        _, sid, aseq = ACK_S.unpack_from(buf)
                        acks += 1
                        if sid == a.id and aseq == seq:
                            break
            if a.pace_us:
                time.sleep(a.pace_us / 1e6)
            if a.progress and sent % a.progress == 0:
                note("sent %d" % sent)
    except (Deadline, socket.timeout) as e:
        if not stop[0]:
            error = "%s: %s" % (type(e).__name__, e)
    signal.alarm(0)
    res = {"mode": "send", "pid": os.getpid(), "id": a.id, "sent": sent, "bytes": nbytes, "acks": acks,
           "local": "%s:%d" % s.getsockname(), "error": error}
    if a.report_registry:
        d = "/dev/shm/accel-%d" % os.getuid()
        try:
            st = os.stat(d)
            res["registry"] = {"path": d, "mode": "%o" % (st.st_mode & 0o7777), "uid": st.st_uid,
                               "files": sorted(os.listdir(d))}
        except OSError as e:
            res["registry"] = {"path": d, "error": str(e)}
    out(res)
    s.close()
    return 1 if error else 0


# ---------------------------------------------------------------------------------------------
# echo


def cmd_echo(a):
    s = udp_socket()
    s.bind(addr(a.bind))
    note("ready %s" % (s.getsockname(),))
    n = 0
    buf = bytearray(70000)
    error = None
    try:
        while True:
            k, src = s.recvfrom_into(buf)
            if buf[:k] == STOP:
                break
            s.sendto(buf[:k], src)
            n += 1
    except Deadline as e:
        error = str(e)
    signal.alarm(0)
    out({"mode": "echo", "pid": os.getpid(), "echoed": n, "error": error})
    return 1 if error else 0


# ---------------------------------------------------------------------------------------------
# rings: several sockets in one process (ring allocation logic), one datagram each


def cmd_rings(a):
    if a.cpu is not None:
        os.sched_setaffinity(0, {a.cpu})
    addrs = [addr(x) for x in a.sockets.split(",")]
    socks = [None] * len(addrs)

    def make(i):
        s = udp_socket()
        s.bind(addrs[i])
        socks[i] = s

    for i in range(len(addrs)):
        if a.thread_last and i == len(addrs) - 1:
            t = threading.Thread(target=make, args=(i,))
            t.start()
            t.join()
        else:
            make(i)
    note("ready")
    got = {}
    error = None
    try:
        for i, s in enumerate(socks):
            d, src = s.recvfrom(2048)
            got["%s:%d" % addrs[i]] = d.decode("latin-1")
    except Deadline as e:
        error = str(e)
    signal.alarm(0)
    ok = all(got.get("%s:%d" % ad) == "to-%d" % ad[1] for ad in addrs)
    out({"mode": "rings", "pid": os.getpid(), "tid_main": threading.get_native_id(), "got": got, "ok": ok,
         "error": error})
    for s in socks:
        s.close()
    return 0 if ok and not error else 1


# ---------------------------------------------------------------------------------------------
# perm: what another user can do with a registry


def cmd_perm(a):
    res = {}
    for p in a.paths.split(","):
        r = {}
        try:
            r["listdir"] = sorted(os.listdir(p))
        except OSError as e:
            r["listdir_errno"] = e.errno
        try:
            fd = os.open(p, os.O_RDONLY)
            try:
                r["read"] = len(os.read(fd, 64))
            except OSError as e:
                r["read_errno"] = e.errno
            os.close(fd)
            r["open"] = "ok"
        except OSError as e:
            r["open_errno"] = e.errno
        try:
            fd = os.open(p, os.O_RDWR)
            os.close(fd)
            r["open_rw"] = "ok"
        except OSError as e:
            r["open_rw_errno"] = e.errno
        res[p] = r
    out({"mode": "perm", "uid": os.getuid(), "results": res})
    return 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["recv", "send", "echo", "rings", "perm"])
    p.add_argument("--bind")
    p.add_argument("--dest")
    p.add_argument("--count", type=int, default=0)
    p.add_argument("--senders", type=int, default=1)
    p.add_argument("--ids", default="")
    p.add_argument("--id", type=int, default=0)
    p.add_argument("--sizes", default="0-1472")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--ack", type=int, default=0)
    p.add_argument("--window", type=int, default=0)
    p.add_argument("--ack-seq", action="store_true")
    p.add_argument("--strict", action="store_true")
    p.add_argument("--stop", action="store_true")
    p.add_argument("--fork", action="store_true")
    p.add_argument("--reuseport", action="store_true")
    p.add_argument("--rcvbuf", type=int, default=0, help="SO_RCVBUF(FORCE) of the receiving socket, bytes")
    p.add_argument("--connect", action="store_true")
    p.add_argument("--loop", action="store_true")
    p.add_argument("--max-seq", type=int, default=100_000_000)
    p.add_argument("--pace-us", type=int, default=0)
    p.add_argument("--progress", type=int, default=0)
    p.add_argument("--report-registry", action="store_true")
    p.add_argument("--sockets", default="")
    p.add_argument("--thread-last", action="store_true")
    p.add_argument("--cpu", type=int)
    p.add_argument("--paths", default="")
    p.add_argument("--deadline", type=int, default=60)
    p.add_argument("--api", choices=["recvfrom", "recvmsg"], default="recvfrom")
    p.add_argument("--timeout", type=float, help="settimeout() on the sockets (poll-based waits)")
    a = p.parse_args()
    global TIMEOUT
    TIMEOUT = a.timeout
    arm_deadline(a.deadline)
    return {"recv": cmd_recv, "send": cmd_send, "echo": cmd_echo, "rings": cmd_rings, "perm": cmd_perm}[a.mode](a)


if __name__ == "__main__":
    sys.exit(main())
