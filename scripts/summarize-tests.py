#!/usr/bin/env python3
"""Sums meson's JUnit logs (one per build directory) into one line: 'N passed, N failed'.

GoogleTest executables run with protocol 'gtest', so each GoogleTest case is one <testcase>;
other meson tests (scripts, stress runs) count as one each.
"""
import sys
import xml.etree.ElementTree as ET

passed = failed = skipped = 0
for path in sys.argv[1:]:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        print(f"summarize-tests: cannot read {path}: {e}", file=sys.stderr)
        failed += 1
        continue
    p = f = s = 0
    for case in root.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            f += 1
        elif case.find("skipped") is not None:
            s += 1
        else:
            p += 1
    print(f"  {path}: {p} passed, {f} failed, {s} skipped")
    passed, failed, skipped = passed + p, failed + f, skipped + s
print(f"total: {passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed or passed == 0 else 0)
