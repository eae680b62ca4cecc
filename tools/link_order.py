"""cli/symbol-order.txt from an LLD map file (-Wl,-Map) and callgrind profiles
(--dump-instr=yes) of that same binary: the first symbol of every .text input section a
profile executed; those of the first profile first, then those only the second added, and so
on, each group in the binary's own order (scripts/link-order runs it). The smallest
invocations come first, so each one's code is one contiguous stretch of .text.

usage: link_order.py MAP BINARY CALLGRIND_OUT...
"""

import bisect
import re
import sys


def text_sections(map_path):
    """(start, size, symbol) of each .text input section. LLD names a function's section
    .text[.unlikely|.hot|...].SYMBOL (function sections), with the symbol mangled."""
    secs, in_text = [], False
    for line in open(map_path, errors="replace"):
        f = line.split()
        if len(f) < 5:
            continue
        try:
            start, size = int(f[0], 16), int(f[2], 16)
        except ValueError:
            continue
        if len(f) == 5 and f[4].startswith("."):  # an output section
            in_text = f[4] == ".text"
            continue
        if in_text and ":(" in line:
            sec = line[line.index(":(") + 2:].rstrip().rstrip(")")
            if sec.startswith(".text."):
                sym = re.sub(r"^(unlikely|hot|startup|exit|split)\.", "", sec[len(".text."):])
                secs.append((start, size, sym))
    secs.sort()
    return secs


def executed(cg_path, binary):
    """Instruction addresses (link-time: callgrind reports them so) executed in `binary`."""
    names, ob, addr, out = {}, None, 0, set()
    for line in open(cg_path, errors="replace"):
        m = re.match(r"^(c?ob)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
        if m:
            kind, i, name = m.groups()
            if name:
                names[i] = name
            if kind == "ob":
                ob = i
            continue
        if not line or line[0] not in "0123456789+-":
            continue
        tok = line.split()[0]
        if tok.startswith("0x"):
            addr = int(tok, 16)
        elif tok[0] == "+":
            addr += int(tok[1:])
        elif tok[0] == "-":
            addr -= int(tok[1:])
        if names.get(ob) == binary:
            out.add(addr)
    return out


def main():
    map_path, binary, profiles = sys.argv[1], sys.argv[2], sys.argv[3:]
    secs = text_sections(map_path)
    starts = [s[0] for s in secs]
    hit = {}  # section -> the first profile that executed it
    for rank, p in enumerate(profiles):
        for a in executed(p, binary):
            i = bisect.bisect_right(starts, a) - 1
            if i >= 0 and secs[i][0] <= a < secs[i][0] + secs[i][1]:
                hit.setdefault(i, rank)
    size = sum(secs[i][1] for i in hit)
    print(f"{len(secs)} text sections, {len(hit)} executed ({size / 1024:.0f} KiB)", file=sys.stderr)
    if not hit:
        sys.exit("no executed function found: is the map from this binary?")
    for i in sorted(hit, key=lambda i: (hit[i], i)):
        print(secs[i][2])


if __name__ == "__main__":
    main()
