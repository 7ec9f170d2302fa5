#!/usr/bin/env python3
"""Sums meson's JUnit logs (one per build directory) into one line: 'N passed, N failed'.

GoogleTest executables run with protocol 'gtest', so each GoogleTest case is one <testcase>;
other meson tests (scripts, stress runs) count as one each.
"""
import sys
import xml.etree.ElementTree as ET

passed = failed = skipped = 0
extra = []
for arg in sys.argv[1:]:
    # "name=1 passed, 0 failed" adds a check that is not a meson test (fuzz run, mutation check)
    if "=" in arg and arg.split("=", 1)[1][:1].isdigit():
        name, text = arg.split("=", 1)
        p = int(text.split(" passed")[0])
        f = int(text.split(", ")[1].split(" failed")[0])
        print(f"  {name}: {p} passed, {f} failed")
        passed, failed = passed + p, failed + f
        continue
    extra.append(arg)
for path in extra:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        print(f"summarize-tests: cannot read {path}: {e}", file=sys.stderr)
        failed += 1
        continue
    p = f = s = 0
    names = []
    for case in root.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            f += 1
            names.append(f"{case.get('classname', '')}.{case.get('name', '')}")
        elif case.find("skipped") is not None:
            s += 1
        else:
            p += 1
    print(f"  {path}: {p} passed, {f} failed, {s} skipped")
    for n in names:
        print(f"    failed: {n}")
    passed, failed, skipped = passed + p, failed + f, skipped + s
print(f"total: {passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed or passed == 0 else 0)
