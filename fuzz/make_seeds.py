#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ (small, committed).

Run from anywhere: python3 fuzz/make_seeds.py. Frames carry valid checksums, so the
seeds also exercise the checksum paths in ordinary builds.
"""
import hashlib
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s >> 16) + (s & 0xFFFF)
    return ~s & 0xFFFF


def frame(payload, vlans=(), src="10.0.0.7", dst="10.0.0.1", sport=50123, dport=11211,
          options=b""):
    ip_src = bytes(int(x) for x in src.split("."))
    ip_dst = bytes(int(x) for x in dst.split("."))
    udp_len = 8 + len(payload)
    pseudo = ip_src + ip_dst + struct.pack("!BBH", 0, 17, udp_len)
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
    ck = csum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", ck) + udp[8:]
    ihl = 5 + len(options) // 4
    ip = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + udp_len, 0x1234, 0x4000, 64,
                     17, 0, ip_src, ip_dst) + options
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    eth = bytes([2, 0, 0, 0, 0, 0x1B, 2, 0, 0, 0, 0, 0x0C])
    for tpid, vid in vlans:
        eth += struct.pack("!HH", tpid, vid)
    eth += b"\x08\x00"
    f = eth + ip + udp
    return f + b"\0" * max(0, 60 - len(f))


def arp(op=1):
    eth = b"\xff" * 6 + bytes([2, 0, 0, 0, 0, 9]) + b"\x08\x06"
    body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + bytes([2, 0, 0, 0, 0, 9]) + \
        bytes([10, 0, 0, 9]) + b"\0" * 6 + bytes([10, 0, 0, 1])
    return eth + body + b"\0" * 18


def hdr(rid=0x1234, seq=0, count=1):
    return struct.pack("!HHHH", rid, seq, count, 0)


def binary_req(opcode, key, extras=b"", value=b""):
    body = extras + key + value
    return struct.pack("!BBHBBHIIQ", 0x80, opcode, len(key), len(extras), 0, 0, len(body),
                       0xDEADBEEF, 0) + body


REQUESTS = [
    b"get foo\r\n", b"get a bb ccc\r\n", b"gets foo\r\n", b"gat 100 foo bar\r\n",
    b"gats -1 foo\r\n", b"set foo 5 100 3\r\nbar\r\n", b"add k 0 0 1 noreply\r\nx\r\n",
    b"replace k 1 2 2\r\nab\r\n", b"append k 0 0 1\r\nx\r\n", b"prepend k 0 0 1\r\nx\r\n",
    b"cas k 0 0 1 99\r\nx\r\n", b"delete k\r\n", b"delete k 0 noreply\r\n",
    b"incr k 5\r\n", b"decr k 1 noreply\r\n", b"touch k 10\r\n", b"version\r\n",
    b"verbosity 1\r\n", b"stats\r\n", b"stats slabs\r\n", b"flush_all 10 noreply\r\n",
    b"quit\r\n", b"mg foo v f t\r\n", b"ms foo 3 T0 q\r\nbar\r\n", b"md Zm9v b q\r\n",
    b"ma k N0 J13\r\n", b"mn\r\n", b"me k\r\n",
    binary_req(0x0C, b"foo"), binary_req(0x01, b"k", b"\0\0\0\1\0\0\0\0", b"vv"),
]

RESPONSES = [
    b"VALUE a 5 3\r\nabc\r\nEND\r\n", b"VALUE a 5 3 1\r\nabc\r\nEND\r\n", b"END\r\n",
    b"VALUE a 5 3\r\nabc\r\nVALUE b 0 2\r\nxy\r\nEND\r\n", b"STORED\r\n", b"NOT_STORED\r\n",
    b"EXISTS\r\n", b"NOT_FOUND\r\n", b"DELETED\r\n", b"TOUCHED\r\n", b"OK\r\n", b"42\r\n",
    b"VERSION 1.6.18\r\n", b"ERROR\r\n", b"CLIENT_ERROR bad command line format\r\n",
    b"SERVER_ERROR out of memory\r\n", b"STAT pid 1\r\nSTAT uptime 2\r\nEND\r\n",
    b"HD c1\r\n", b"VA 3 f0\r\nabc\r\n", b"EN\r\n", b"MN\r\n", b"ME foo exp=-1\r\n",
]


def reassembly_seed(chunks):
    """[len][frame header][bytes] per datagram, as the response target reads them."""
    out = b""
    for h, body in chunks:
        out += bytes([len(body)]) + h + body
    return out


# --- core: operations for tests/core_ops/mod.rs (its `op` reads one byte, then its fields) ---

# Client selectors (byte % 8): untrusted, the other untrusted, trusted, outside --allow.
C0, C1, TRUSTED, OUTSIDER = 0, 3, 5, 7
# Key bytes: the two skewed keys, five warm ones (160..164), the 250-byte key.
K0, K1, WARM, LONG = 0, 1, 160, 255


def req(client, rid, shape, key, extra=0, tail=b""):
    """A client request; shape % 24 picks the command (0 get, 6 multi-get, 9 set, 15 mg...)."""
    return bytes([0, client, rid >> 8 & 0xFF, rid & 0xFF, shape, key, extra]) + bytes(tail)


def get(client, rid, key):
    return req(client, rid, 0, key)


def multi_get(client, rid, keys):
    """2 to 5 keys, read after the request's fields."""
    return req(client, rid, 6, keys[0], len(keys) - 2, keys)


def any_req(client, rid, shape, key, extra):
    """Request `shape` with the fields it reads after the common ones."""
    shape %= 24
    if shape == 6:
        tail = [key] * (2 + extra % 4)
    elif shape in (9, 10, 11, 16):
        tail = [extra, 3]
    elif shape == 22:
        tail = [4] + list(b"get ")
    else:
        tail = []
    return req(client, rid, shape, key, extra, tail)


def set_(client, rid, key, length_byte, fill=0):
    """value_len(length_byte): <64 -> /4, 64.. -> 16+, 128.. -> 270+, 192.. -> 500+25*low."""
    return req(client, rid, 9, key, 0, [length_byte, fill])


def answer(i=0, mode=2, chunk=None, at_once=True):
    """The backend serves to_backends[i]; mode 0 error, 1 bytes, else a model memcached;
    0x10 cut in chunk*4+1 bytes, 0x20 wrong request id, 0x40 datagrams reversed."""
    out = bytes([4 if at_once else 7, i, mode])
    if mode & 0x10:
        out += bytes([chunk or 0])
    if mode & 0x20:
        out += bytes([0x5A])
    return out


def reply(i=0, twice=False):
    return bytes([8, i | (0x80 if twice else 0)])


def lose(i=0, reply_=False):
    return bytes([9, i << 1 | (1 if reply_ else 0)])


def clock_ms(n):
    return bytes([10, 0x80 | n])


def clock_s10(n):
    """n tenths of a second."""
    return bytes([10, 0xC0 | n])


def tick(ms=0):
    return bytes([11, ms])


def drain():
    return bytes([12])


def raw(data):
    return bytes([13, 0xFF, len(data) >> 8, len(data) & 0xFF]) + data


def mutate(i, at, x):
    return bytes([14, i, at >> 8, at & 0xFF, x])


def arp_backend(b):
    return bytes([15, 0, b << 1])


def icmp(i=0):
    return bytes([15, 1, i])


def warm_up(rounds=100):
    """Resolves backend 2, stores values, then a skewed mix until k0/k1 are hot and
    replicated and the warm keys learned into L2."""
    out = arp_backend(2)
    rid = 1
    for k in [K0, K1] + [WARM + i for i in range(5)]:
        out += set_(TRUSTED, rid, k, 0x50) + answer()
        rid += 1
    for r in range(rounds):
        out += get(C0, rid, K0) + answer()
        out += get(C1, rid + 1, K1 if r % 2 else K0) + answer()
        out += get(TRUSTED, rid + 2, WARM + r % 5) + answer()
        rid += 3
        out += clock_ms(1)
        if r % 8 == 7:
            # Ticks run replication (fetch, replica writes): the backends answer them.
            out += tick(1) + answer() + answer() + answer() + answer()
    return out


def core_seeds():
    seeds = []
    warm = warm_up()
    # Warm-up alone, under each policy byte's first values.
    for policy in (0x00, 0x12, 0x47, 0xC3):
        seeds.append(bytes([policy]) + warm)
    # Replies over the 250-byte cap toward untrusted and trusted clients: cache hits of a
    # 278-byte value, split multi-gets of 64-byte values capped in total, a 1,300-byte
    # value in several datagrams. L2 off: the warm keys' parts all go to backends.
    big = bytes([0x21]) + warm
    rid = 5000
    big += set_(TRUSTED, rid, K0, 0x88) + answer()
    for r in range(12):
        big += get(TRUSTED, rid + 1, K0) + answer() + get(C0, rid + 2, K0) + answer()
        big += clock_ms(1)
        rid += 2
    for k in (WARM, WARM + 1, WARM + 2):
        big += set_(TRUSTED, rid, k, 0x70) + answer()
        rid += 1
    for r in range(12):
        big += multi_get(C0, rid, [K0, WARM, WARM + 1, WARM + 2, K1]) + drain()
        big += answer() + answer() + answer() + answer() + clock_ms(1)
        big += multi_get(TRUSTED, rid + 1, [WARM, WARM + 1, WARM + 2]) + drain()
        big += answer() + answer() + answer() + clock_ms(1)
        rid += 2
    big += set_(TRUSTED, rid, K1, 0xE0) + answer()
    for r in range(12):
        big += get(C0, rid, K1) + answer() + get(TRUSTED, rid + 1, K1)
        big += answer(mode=0x52, chunk=80) + clock_ms(2)
        rid += 2
    seeds.append(big)
    # Failover: requests lost until backends are marked down (writes of the hot key whose
    # replica copies are lost, so its new primary is fenced), probes answered, rejoin
    # flushes, displaced keys cleaned; an ICMP unreachable; ARP asked of kvlb.
    fail = bytes([0x00]) + warm
    rid = 7000
    for r in range(12):
        fail += get(C0, rid, K0) + get(C1, rid + 1, WARM + r % 5) + lose() + lose()
        fail += set_(TRUSTED, rid + 2, K0, 0x20) + clock_ms(15) + tick(20) + lose()
        rid += 3
    fail += icmp(0) + bytes([15, 0, 1]) + drain()
    for r in range(20):
        fail += clock_s10(3) + tick(0) + answer() + answer() + answer() + answer()
        fail += get(C0, rid, K0) + answer() + set_(C1, rid + 1, K1, 0x10) + answer()
        rid += 2
    seeds.append(fail)
    # The heat moves: a warm key turns hot (its value moves from L2 to L1), k0 cools.
    shift = bytes([0x01]) + warm
    rid = 8000
    for r in range(120):
        shift += get(C0, rid, WARM + 1) + answer() + get(C1, rid + 1, WARM + 1) + answer()
        shift += get(TRUSTED, rid + 2, WARM + 2 + r % 3) + answer() + clock_ms(1)
        rid += 3
        if r % 8 == 7:
            shift += tick(1) + answer() + answer() + answer()
    seeds.append(shift)
    # An unreliable network: late, duplicated, reordered and misaddressed replies, token
    # reuse in a full flow table, replies in many small datagrams, garbage.
    chaos = bytes([0x08]) + warm
    rid = 9000
    for r in range(40):
        chaos += get(C0, rid, K0) + get(C1, rid + 1, K1) + req(C0, rid + 2, 15, K0, 0x10)
        chaos += answer(1, mode=0x72, chunk=3, at_once=False)
        chaos += answer(0, mode=0x22 if r % 3 == 0 else 2, at_once=False)
        chaos += reply(r % 3, twice=r % 2 == 0) + reply(0)
        chaos += multi_get(C0, rid + 3, [K0, K1, WARM, LONG]) + drain()
        junk = b"VALUE k0 0 1\r\nx\r\nEND\r\n"[: r % 25]
        chaos += answer(2, mode=1) + bytes([len(junk)]) + junk
        chaos += mutate(r, 14 + r * 7, 1 << (r % 8)) + clock_ms(7) + tick(r % 32)
        chaos += any_req(C0, rid + 4, r % 24, K0 if r % 2 else WARM, r * 37 % 256)
        rid += 5
    chaos += raw(frame(hdr(9) + b"get k0\r\n", src="10.0.0.100", sport=5000))
    chaos += raw(frame(hdr(9, 0, 1) + b"VALUE k0 0 1\r\nx\r\nEND\r\n", src="10.0.1.1",
                       dst="10.0.0.1", sport=11211, dport=40000))
    chaos += raw(arp(1)) + raw(b"\xff" * 20)
    seeds.append(chaos)
    return seeds


def write(target, blobs):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for b in blobs:
        name = hashlib.sha1(b).hexdigest()
        with open(os.path.join(d, name), "wb") as f:
            f.write(b)


def main():
    frames = [frame(hdr() + r) for r in REQUESTS[:8]]
    frames += [frame(hdr() + b"get foo\r\n", vlans=[(0x8100, 42)]),
               frame(hdr() + b"get foo\r\n", vlans=[(0x88A8, 10), (0x8100, 20)]),
               frame(hdr() + b"get foo\r\n", options=b"\x01\x01\x01\x00"),
               frame(hdr(0x42, 0, 1) + RESPONSES[0], sport=11211, dport=50123),
               arp(1), arp(2)]
    write("frame", frames)
    write("request", REQUESTS + [hdr() + r for r in REQUESTS[:4]])
    big = b"VALUE big 0 300\r\n" + b"z" * 300 + b"\r\nEND\r\n"
    write("response", RESPONSES + [
        reassembly_seed([(hdr(1, 0, 0), b""), (hdr(1, 0, 1), b"VALUE a 5 3\r\nabc\r\n"),
                         (hdr(1, 0, 1), b"END\r\n")]),
        reassembly_seed([(hdr(2, 1, 3), big[100:200]), (hdr(2, 0, 3), big[:100]),
                         (hdr(2, 2, 3), big[200:])]) if len(big) - 200 < 256 else b"",
    ])
    write("hit_reply", [b"\0\0\0\0\0\x64" + frame(hdr() + b"get foo\r\n"),
                        b"\x01\x02\x01\x05\x05\x00" + frame(hdr() + b"gets foo\r\n"),
                        b"\0\0\0\0\0\x10" + frame(hdr() + b"get foo\r\n",
                                                  vlans=[(0x8100, 7)])])
    write("core", core_seeds())


if __name__ == "__main__":
    main()
