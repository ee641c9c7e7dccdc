"""The functions of one binary that callgrind saw run, hottest first.

    python3 benches/link_order.py BINARY OUT DUMP...
    python3 benches/link_order.py --check BINARY LIST

Reads callgrind dumps (made with --demangle=no) and writes to OUT the
symbols of BINARY (matched by file name) that executed in any of them, one
per line: the list link-order.txt that build.rs hands to the linker.

The functions every dump ran come first, then those fewer dumps ran (the
features some configurations use), each group hottest first: a process
touches one contiguous run of code for what every configuration does plus
a run per feature it uses, rather than pages interleaved with the code of
features it has off.

--check prints how many of LIST's functions BINARY has: a build made after
the dependencies or the toolchain changed has few, and needs a new list.
"""

import collections
import os
import re
import subprocess
import sys

NAMED = re.compile(r"^(c?ob|c?fn|c?fl|c?fi|c?fe)=(?:\((\d+)\))?(?: ?(.*))?$")


def own_costs(path, binary, costs):
    objects, functions = {}, {}
    in_binary, function, after_call = False, None, False
    with open(path, errors="replace") as dump:
        for line in dump:
            line = line.rstrip("\n")
            named = NAMED.match(line)
            if named:
                kind, ref, name = named.groups()
                table = objects if kind.endswith("ob") else functions if kind.endswith("fn") else None
                if table is not None and ref and name:
                    table[ref] = name
                if kind == "ob":
                    obj = objects.get(ref, name) or ""
                    in_binary = os.path.basename(obj) == binary
                elif kind == "fn":
                    function = functions.get(ref, name) if in_binary else None
                continue
            if line.startswith("calls="):
                # The next cost line is the callee's inclusive cost.
                after_call = True
                continue
            if line[:1].isdigit() or line[:1] in "+-*":
                if after_call:
                    after_call = False
                elif function:
                    fields = line.split()
                    if len(fields) >= 2:
                        # "name'2" is callgrind's mark for a recursion level.
                        costs[re.sub(r"'\d+$", "", function)] += int(fields[1])


def check(binary, listing):
    with open(listing) as f:
        listed = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    nm = subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True, check=True).stdout
    have = {fields[2] for fields in (line.split() for line in nm.splitlines()) if len(fields) == 3}
    print(f"layout: {sum(s in have for s in listed)} of {len(listed)} functions of {listing} are in {binary}")


def main():
    if sys.argv[1] == "--check":
        check(sys.argv[2], sys.argv[3])
        return
    binary, out, dumps = os.path.basename(sys.argv[1]), sys.argv[2], sys.argv[3:]
    costs, runs_in = collections.Counter(), collections.Counter()
    for path in dumps:
        ran = collections.Counter()
        own_costs(path, binary, ran)
        costs.update(ran)
        runs_in.update(ran.keys())
    # Addresses stand for code without a symbol (the PLT and such).
    symbols = sorted(
        (s for s in costs if not s.startswith("0x") and s != "(below main)"),
        key=lambda s: (-runs_in[s], -costs[s], s),
    )
    if not symbols:
        sys.exit(f"link_order.py: no function of {binary} in {' '.join(dumps)}")
    with open(out, "w") as f:
        f.write("# The functions a running porteiro executes, hottest first (build.rs,\n")
        f.write("# benches/link_order.sh). Generated: do not edit.\n")
        f.write("\n".join(symbols) + "\n")
    print(f"{len(symbols)} functions -> {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
