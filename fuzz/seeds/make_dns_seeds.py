#!/usr/bin/env python3
"""Writes the dns_handler seed corpus: valid queries in the target's input format
(flags byte, source address, DNS message). Run from this directory; the output is committed."""
import ipaddress
import struct

def name(text):
    out = b""
    for label in text.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"

def opt(payload, ecs=None):
    options = b""
    if ecs:
        net = ipaddress.ip_network(ecs)
        family = 1 if net.version == 4 else 2
        addr = net.network_address.packed[: (net.prefixlen + 7) // 8]
        data = struct.pack(">HBB", family, net.prefixlen, 0) + addr
        options = struct.pack(">HH", 8, len(data)) + data
    return b"\0" + struct.pack(">HHIH", 41, payload, 0, len(options)) + options

def query(qname, qtype, edns=None, ecs=None, qid=0x4242):
    additional = opt(edns or 1232, ecs) if (edns or ecs) else b""
    header = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 1 if additional else 0)
    return header + name(qname) + struct.pack(">HH", qtype, 1) + additional

A, NS, SOA, MX, TXT, AAAA, SRV, CAA, ANY = 1, 2, 6, 15, 16, 28, 33, 257, 255
V4 = bytes([0]) + ipaddress.ip_address("198.51.100.7").packed
V6_TCP = bytes([3]) + ipaddress.ip_address("2001:db8::7").packed
SEEDS = {
    "geo-a-ecs4": V4 + query("api.example.com.", A, ecs="192.0.2.0/24"),
    "geo-aaaa-ecs6": V4 + query("api.example.com.", AAAA, ecs="2001:db8:3::/48"),
    "geo-mixed-case-tcp": V6_TCP + query("ApI.ExAmPlE.cOm.", A, edns=4096),
    "cname-chain": V4 + query("chain.example.com.", A, edns=1232),
    "big-txt-plain": V4 + query("big.example.com.", TXT),
    "delegated": V4 + query("www.delegated.example.com.", A),
    "any-apex": V4 + query("example.com.", ANY, edns=4096),
    "weighted": V4 + query("lottery.example.com.", A),
    "sub-soa": V6_TCP + query("sub.example.com.", SOA),
    "wildcard-mx": V4 + query("x.wild.example.com.", MX),
    "refused": V4 + query("example.org.", A),
    "srv": V4 + query("_sip._tcp.example.com.", SRV, edns=1232),
}
for file, data in SEEDS.items():
    with open(f"dns_handler/{file}", "wb") as out:
        out.write(data)
