"""Print the table ``make test-gpu`` ends with: the test suite's counts and each GPU benchmark's
ratio against its baseline and its target (from pytest's JUnit XML and the benchmarks' JSON lines).

    python tools/gpu_report.py REPORT_DIR
"""

import json
import os
import re
import sys
import xml.etree.ElementTree as ET


def suite_counts(path):
    if not os.path.isfile(path):
        return None
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    total["passed"] = total["tests"] - total["failures"] - total["errors"] - total["skipped"]
    failed = [f"{c.get('classname')}::{c.get('name')}" for c in root.iter("testcase")
              if c.find("failure") is not None or c.find("error") is not None]
    return total, failed


_PROGRESS = re.compile(r"^([.FEsxX]+)\s+\[\s*(\d+)%\]\s*$")


def progress_counts(path):
    """Counts from the progress lines of a pytest -q log ("..F.s  [ 12%]"), for a run killed before it
    wrote its JUnit report; None without a log or a progress line."""
    if not os.path.isfile(path):
        return None
    marks, percent = "", None
    for line in open(path, errors="replace"):
        m = _PROGRESS.match(line.rstrip("\n"))
        if m:
            marks, percent = marks + m.group(1), int(m.group(2))
    if percent is None:
        return None
    count = lambda chars: sum(marks.count(c) for c in chars)  # noqa: E731
    return {"passed": count(".X"), "failed": count("FE"), "skipped": count("sx"), "percent": percent}


def main(report_dir: str) -> int:
    status = 0
    print("\n=== reactfast make test-gpu ===")
    for label, name in (("tests", "tests"), ("GPU benchmarks", "bench")):
        limit_file = os.path.join(report_dir, name + ".limit")
        stopped = (f" (STOPPED at its {open(limit_file).read().strip()} s limit: the rest did not run)"
                   if os.path.isfile(limit_file) else "")
        status |= bool(stopped)
        counts = suite_counts(os.path.join(report_dir, name + ".xml"))
        if counts is None:
            seen = progress_counts(os.path.join(report_dir, name + ".log"))
            if seen is None:
                print(f"{label:16s} no result (the run did not finish){stopped}")
            else:
                print(f"{label:16s} killed at {seen['percent']}%: {seen['passed']} passed, {seen['failed']} failed, "
                      f"{seen['skipped']} skipped so far (no report; see {name}.log){stopped}")
            status = 1
            continue
        c, failed = counts
        print(f"{label:16s} {c['passed']} passed, {c['failures'] + c['errors']} failed, {c['skipped']} skipped"
              f"{stopped}")
        for f in failed[:30]:
            print(f"    FAILED {f}")
        status |= bool(failed)
    rows = []
    path = os.path.join(report_dir, "bench.jsonl")
    if os.path.isfile(path):
        rows = [json.loads(line) for line in open(path) if line.strip()]
    if rows:
        print(f"\n{'benchmark':58s} {'ms':>9s} {'baseline':>22s} {'ratio':>7s} {'target':>7s} {'floor':>6s}")
        for r in rows:
            target = "-" if r["target"] is None else f"{r['target']:.2f}x" + (" ok" if r["met"] else " MISS")
            floor = "-" if r["floor_fraction"] is None else f"{r['floor_fraction']:.0%}"
            base = f"{r['baseline']} {r['baseline_ms']:.4g}"
            print(f"{r['bench'][:58]:58s} {r['ms']:9.4g} {base[:22]:>22s} {r['ratio']:6.2f}x {target:>7s} "
                  f"{floor:>6s}")
        print(f"device: {rows[0]['device']}")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "gpu_report"))
