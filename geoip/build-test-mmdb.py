#!/usr/bin/env python3
"""Build geoip/test-city.mmdb (a small GeoLite2-City-shaped MaxMind DB) from geoip/test-city.csv.

Test data only: never use it in production (see geoip/README.md).

Run it (from anywhere; paths are relative to this file):

    python3 -m venv /tmp/geoip-venv
    /tmp/geoip-venv/bin/pip install mmdb-writer==0.2.7 netaddr==1.3.0 maxminddb==3.2.0
    /tmp/geoip-venv/bin/python geoip/build-test-mmdb.py            # CSV -> mmdb, then verify
    /tmp/geoip-venv/bin/python geoip/build-test-mmdb.py --verify   # only check the mmdb
    /tmp/geoip-venv/bin/python geoip/build-test-mmdb.py --refresh-csv [--tor-dir /usr/share/tor]
        # rewrites the CSV from Debian's tor-geoipdb (apt-get install tor-geoipdb), then builds

Deterministic and idempotent: the same CSV gives a byte-identical mmdb (build_epoch comes from
the CSV's "# source-date:" line, not the clock; map keys are written in a fixed order), and the
file is only rewritten when its bytes would change.

Layout (what MaxMind's own GeoLite2-City uses, so Rust `maxminddb` 0.32, libmaxminddb and
gdnsd's geoip plugin all read it): ip_version 6, record_size chosen by the writer (24 here),
IPv4 networks stored in the IPv4-compatible subtree ::/96 (192.0.2.0/24 is ::c000:200/120;
readers return /24 for an IPv4 lookup), and, as in MaxMind's databases, ::ffff:0:0/96
(IPv4-mapped) and 2002::/16 (6to4) are aliases of that subtree. database_type is
"GeoLite2-City" (gdnsd's city-auto-mode wants a City database); each record is
    {"continent": {"code": "AS", "names": {"en": "Asia"}},
     "country": {"iso_code": "MY", "names": {"en": "Malaysia"}},
     "location": {"latitude": 3.14, "longitude": 101.69}}      (latitude/longitude are doubles)
"""

import argparse
import calendar
import csv
import ipaddress
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CSV_PATH = os.path.join(HERE, "test-city.csv")
MMDB_PATH = os.path.join(HERE, "test-city.mmdb")

CONTINENT_NAMES = {
    "AF": "Africa", "AN": "Antarctica", "AS": "Asia", "EU": "Europe",
    "NA": "North America", "OC": "Oceania", "SA": "South America",
}

# Countries taken from tor-geoipdb for the real ranges: continent, English name and an
# approximate geographic centroid (latitude, longitude), rounded.
COUNTRIES = {
    "MY": ("AS", "Malaysia", 4.2, 101.98),
    "US": ("NA", "United States", 39.83, -98.58),
    "DE": ("EU", "Germany", 51.17, 10.45),
    "SG": ("AS", "Singapore", 1.35, 103.82),
    "JP": ("AS", "Japan", 36.2, 138.25),
    "GB": ("EU", "United Kingdom", 54.0, -2.5),
    "FR": ("EU", "France", 46.6, 2.2),
    "BR": ("SA", "Brazil", -14.24, -51.93),
    "AU": ("OC", "Australia", -25.27, 133.78),
    "IN": ("AS", "India", 22.0, 79.0),
    "ZA": ("AF", "South Africa", -30.56, 22.94),
}

# Deterministic test mappings (the coordinates are the three demo regions' locations).
TEST_LOCATIONS = {
    "MY": ("AS", 3.14, 101.69),
    "US": ("NA", 39.0, -77.5),
    "DE": ("EU", 50.1, 8.7),
}
TEST_NETWORKS = [
    ("192.0.2.0/24", "MY"), ("198.51.100.0/24", "US"), ("203.0.113.0/24", "DE"),
    ("2001:db8:1::/48", "MY"), ("2001:db8:2::/48", "US"), ("2001:db8:3::/48", "DE"),
    ("10.1.0.0/16", "MY"), ("10.2.0.0/16", "US"), ("10.3.0.0/16", "DE"),
]

# Per country, how many CIDR rows to take from the largest tor-geoipdb ranges.
V4_ROWS_PER_COUNTRY = 30
V6_ROWS_PER_COUNTRY = 12

# Address space that is an alias of the IPv4 subtree (or reserved); no real range may sit there.
RESERVED_V6 = [ipaddress.ip_network(n) for n in ("::/80", "::ffff:0:0/96", "2002::/16", "2001:db8::/32")]


def fmt_coord(x):
    return ("%.4f" % x).rstrip("0").rstrip(".")


# ---------------------------------------------------------------------------------------------
# --refresh-csv: tor-geoipdb -> test-city.csv


def read_tor_ranges(path, v6):
    """Yield (first, last, country) from a tor geoip/geoip6 file; also return the header date."""
    ranges, date = [], None
    with open(path, encoding="ascii") as f:
        for line in f:
            line = line.strip()
            if line.startswith("#"):
                if line.startswith("# Generated:"):
                    date = line.split(":", 1)[1].strip()
                continue
            if not line:
                continue
            first, last, cc = line.split(",")
            if cc not in COUNTRIES:
                continue
            if v6:
                a, b = ipaddress.IPv6Address(first), ipaddress.IPv6Address(last)
            else:
                a, b = ipaddress.IPv4Address(int(first)), ipaddress.IPv4Address(int(last))
            ranges.append((a, b, cc))
    return ranges, date


def pick(ranges, per_country):
    """The largest ranges per country (ties: lowest address), as CIDRs, up to per_country rows."""
    out = []
    for cc in COUNTRIES:
        mine = [r for r in ranges if r[2] == cc]
        mine.sort(key=lambda r: (-(int(r[1]) - int(r[0])), int(r[0])))
        rows = []
        for a, b, _ in mine:
            cidrs = list(ipaddress.summarize_address_range(a, b))
            if any(any(c.subnet_of(r) or r.subnet_of(c) for r in RESERVED_V6) for c in cidrs if c.version == 6):
                continue
            if len(rows) + len(cidrs) > per_country:
                continue
            rows.extend((c, cc) for c in cidrs)
            if len(rows) == per_country:
                break
        out.extend(rows)
    return out


def refresh_csv(tor_dir):
    v4, date4 = read_tor_ranges(os.path.join(tor_dir, "geoip"), False)
    v6, date6 = read_tor_ranges(os.path.join(tor_dir, "geoip6"), True)
    real = pick(v4, V4_ROWS_PER_COUNTRY) + pick(v6, V6_ROWS_PER_COUNTRY)
    real.sort(key=lambda r: (r[0].version, int(r[0].network_address), r[0].prefixlen))
    date = date4 or date6
    epoch = calendar.timegm(time.strptime(date, "%a, %d %b %Y %H:%M:%S GMT")) if date else 0
    with open(CSV_PATH + ".tmp", "w", encoding="utf-8", newline="") as f:
        f.write("# Headland test GeoIP data (NOT for production). Built into test-city.mmdb by build-test-mmdb.py.\n")
        f.write("# Rows up to 'real ranges' are this project's own deterministic test mappings (documentation\n")
        f.write("# and private address space; coordinates = the demo regions apac/na/eu).\n")
        f.write("# The real ranges are the %d largest IPv4 and %d largest IPv6 ranges per country, as CIDRs, from\n"
                % (V4_ROWS_PER_COUNTRY, V6_ROWS_PER_COUNTRY))
        f.write("# Debian tor-geoipdb (/usr/share/tor/geoip, geoip6), converted by Tor's geoip-db-tool from the\n")
        f.write("# IPFire Location database (https://location.ipfire.org/, CC BY-SA 4.0). Their coordinates are\n")
        f.write("# approximate country centroids and the continents come from the table in build-test-mmdb.py.\n")
        f.write("# source-date: %s (%d)\n" % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch)), epoch))
        f.write("network,country,continent,latitude,longitude\n")
        w = csv.writer(f, lineterminator="\n")
        for net, cc in TEST_NETWORKS:
            cont, lat, lon = TEST_LOCATIONS[cc]
            w.writerow([net, cc, cont, fmt_coord(lat), fmt_coord(lon)])
        f.write("# real ranges\n")
        for net, cc in real:
            cont, _, lat, lon = COUNTRIES[cc]
            w.writerow([str(net), cc, cont, fmt_coord(lat), fmt_coord(lon)])
    os.replace(CSV_PATH + ".tmp", CSV_PATH)
    print("wrote %s: %d test + %d real rows" % (CSV_PATH, len(TEST_NETWORKS), len(real)))


# ---------------------------------------------------------------------------------------------
# CSV -> mmdb


def read_csv():
    rows, epoch = [], 0
    with open(CSV_PATH, encoding="utf-8") as f:
        lines = []
        for line in f:
            if line.startswith("#"):
                if line.startswith("# source-date:") and "(" in line:
                    epoch = int(line.rsplit("(", 1)[1].split(")")[0])
                continue
            lines.append(line)
    for rec in csv.DictReader(lines):
        net = ipaddress.ip_network(rec["network"].strip(), strict=True)
        cc = rec["country"].strip().upper()
        cont = rec["continent"].strip().upper()
        if len(cc) != 2 or cont not in CONTINENT_NAMES:
            sys.exit("bad row: %r" % rec)
        rows.append((net, cc, cont, float(rec["latitude"]), float(rec["longitude"])))
    # Overlaps would make the result depend on insertion order: refuse them.
    for version in (4, 6):
        nets = sorted((r[0] for r in rows if r[0].version == version),
                      key=lambda n: (int(n.network_address), n.prefixlen))
        for a, b in zip(nets, nets[1:]):
            if a.overlaps(b):
                sys.exit("overlapping networks in CSV: %s and %s" % (a, b))
    for net, *_ in rows:
        if net.version == 6 and any(net.overlaps(r) for r in RESERVED_V6[:3]):
            sys.exit("%s lies in IPv4-alias space (::/80, ::ffff:0:0/96, 2002::/16)" % net)
    return rows, epoch


def record(cc, cont, lat, lon):
    # Keys in a fixed (sorted) order so the bytes do not depend on anything but the CSV.
    country = {"iso_code": cc}
    if cc in COUNTRIES:
        country = {"iso_code": cc, "names": {"en": COUNTRIES[cc][1]}}
    return {
        "continent": {"code": cont, "names": {"en": CONTINENT_NAMES[cont]}},
        "country": country,
        "location": {"latitude": float(lat), "longitude": float(lon)},
    }


def build():
    from mmdb_writer import MMDBWriter, SearchTreeNode
    from netaddr import IPSet

    rows, epoch = read_csv()

    class Writer(MMDBWriter):
        def _build_meta(self):
            meta = super()._build_meta()
            meta["build_epoch"] = epoch  # not the clock: keep the output reproducible
            return meta

    w = Writer(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-City",
               languages=["en"], description={"en": "Headland test GeoIP data (not for production)"},
               float_type="f64")
    rows.sort(key=lambda r: (r[0].version, int(r[0].network_address), r[0].prefixlen))
    for net, cc, cont, lat, lon in rows:
        # float_type="f64": latitude/longitude are written as doubles, as in GeoLite2.
        w.insert_network(IPSet([str(net)]), record(cc, cont, lat, lon))

    # Alias ::ffff:0:0/96 and 2002::/16 to the IPv4 subtree at ::/96, as MaxMind does.
    node = w.tree
    for _ in range(96):
        node = node.get_or_create(0)
    v4_root = node
    for prefix in ("::ffff:0:0/96", "2002::/16"):
        net = ipaddress.IPv6Network(prefix)
        bits = [(int(net.network_address) >> (127 - i)) & 1 for i in range(net.prefixlen)]
        node = w.tree
        for bit in bits[:-1]:
            child = node[bit]
            if child is None:
                child = SearchTreeNode()
                node[bit] = child
            node = child
        node[bits[-1]] = v4_root

    tmp = MMDB_PATH + ".tmp"
    w.to_db_file(tmp)
    with open(tmp, "rb") as f:
        new = f.read()
    old = None
    if os.path.exists(MMDB_PATH):
        with open(MMDB_PATH, "rb") as f:
            old = f.read()
    if old == new:
        os.unlink(tmp)
        print("%s unchanged (%d bytes, %d networks)" % (MMDB_PATH, len(new), len(rows)))
    else:
        os.replace(tmp, MMDB_PATH)
        print("wrote %s (%d bytes, %d networks)" % (MMDB_PATH, len(new), len(rows)))


# ---------------------------------------------------------------------------------------------
# read back with the reference reader


EXPECT = [
    # address, country, continent, latitude, longitude, prefix length
    ("192.0.2.1", "MY", "AS", 3.14, 101.69, 24),
    ("198.51.100.7", "US", "NA", 39.0, -77.5, 24),
    ("203.0.113.9", "DE", "EU", 50.1, 8.7, 24),
    ("2001:db8:1::1", "MY", "AS", 3.14, 101.69, 48),
    ("2001:db8:2::1", "US", "NA", 39.0, -77.5, 48),
    ("2001:db8:3::abcd", "DE", "EU", 50.1, 8.7, 48),
    ("10.1.2.3", "MY", "AS", 3.14, 101.69, 16),
    ("10.2.0.1", "US", "NA", 39.0, -77.5, 16),
    ("10.3.4.5", "DE", "EU", 50.1, 8.7, 16),
    ("::ffff:203.0.113.9", "DE", "EU", 50.1, 8.7, 120),   # v4-mapped alias (prefix in v6 bits)
    ("2002:c000:0201::1", "MY", "AS", 3.14, 101.69, 40),  # 6to4 alias of 192.0.2.1
]


def verify():
    import maxminddb

    rows, _ = read_csv()
    with maxminddb.open_database(MMDB_PATH, maxminddb.MODE_MEMORY) as r:
        m = r.metadata()
        assert m.database_type == "GeoLite2-City" and m.ip_version == 6, m
        print("metadata: type=%s ip_version=%d record_size=%d nodes=%d build_epoch=%d"
              % (m.database_type, m.ip_version, m.record_size, m.node_count, m.build_epoch))
        for ip, cc, cont, lat, lon, plen in EXPECT:
            rec, got_plen = r.get_with_prefix_len(ip)
            assert rec is not None, ip
            got = (rec["country"]["iso_code"], rec["continent"]["code"],
                   rec["location"]["latitude"], rec["location"]["longitude"], got_plen)
            print("%-20s -> %s %s (%s, %s) /%d" % ((ip,) + got))
            assert got == (cc, cont, lat, lon, plen), (ip, got)
        for ip in ("127.0.0.1", "2001:db8:4::1", "10.4.0.1"):
            assert r.get(ip) is None, ip
        # Every CSV row reads back as written.
        for net, cc, cont, lat, lon in rows:
            rec, plen = r.get_with_prefix_len(str(net.network_address))
            assert rec is not None and plen == net.prefixlen, (net, plen)
            assert (rec["country"]["iso_code"], rec["continent"]["code"]) == (cc, cont), net
            assert (rec["location"]["latitude"], rec["location"]["longitude"]) == (lat, lon), net
        print("verified: %d CSV rows and %d test lookups" % (len(rows), len(EXPECT)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--refresh-csv", action="store_true", help="regenerate the CSV from tor-geoipdb first")
    ap.add_argument("--tor-dir", default="/usr/share/tor", help="where tor-geoipdb's geoip and geoip6 are")
    ap.add_argument("--verify", action="store_true", help="only verify the existing mmdb")
    args = ap.parse_args()
    if args.verify:
        verify()
        return
    if args.refresh_csv:
        refresh_csv(args.tor_dir)
    build()
    try:
        import maxminddb  # noqa: F401
    except ImportError:
        print("maxminddb not installed: skipping verification (pip install maxminddb)")
        return
    verify()


if __name__ == "__main__":
    main()
