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


if __name__ == "__main__":
    main()
