#!/usr/bin/env python3
"""Reads `perf script` output on stdin; for samples whose leaf frame matches the regex in
argv[1], prints the share of all samples per leaf and its nearest Strom/library callers."""

import collections
import re
import sys

pattern = re.compile(sys.argv[1])
ours = re.compile(r"strom_|kafka_protocol::|bytes::|tokio::io::util")
who = collections.Counter()
total = 0
frames = []


def flush():
    global total
    if not frames:
        return
    total += 1
    if pattern.search(frames[0]):
        chain = [f for f in frames[1:] if ours.search(f) and "{{closure}}::{{closure}}" not in f]
        who[frames[0] + " <- " + " <- ".join(list(dict.fromkeys(chain))[:3])] += 1


for line in sys.stdin:
    line = line.rstrip("\n")
    if not line.strip():
        flush()
        frames.clear()
        continue
    if line[0] in "\t ":
        parts = line.strip().split(" ", 1)
        if len(parts) == 2:
            sym = re.sub(r" \((inlined|/[^)]*|\[kernel[^)]*)\)$", "", parts[1])
            frames.append(re.sub(r"\+0x[0-9a-f]+", "", sym))
flush()
for s, c in who.most_common(8):
    if c / max(total, 1) >= 0.005:
        print(f"{100 * c / total:5.1f}%  {s[:300]}")
