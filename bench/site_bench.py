"""site.yml benchmark: the provisioning issue's numbers, measured on the 3-node lab.

    python bench/site_bench.py [--repeat 3]

Targets: the first `ansible-playbook site.yml` on a fresh lab under 60 s; the second under 30 s
with nothing changed. Each repeat starts from a fresh lab (`lab up`). Results go to
bench/results/site.json and a table on stdout. These are measurements, not tests: the exit code is
0 whatever the times are, unless a run fails or the second run changes something.
"""

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def run(argv):
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stdout}\n{proc.stderr}")
    return time.monotonic() - started, proc.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    playbook = [str(ROOT / ".venv" / "bin" / "ansible-playbook"), "site.yml"]
    first, second, changed_first, changed_second = [], [], [], []
    for _ in range(args.repeat):
        run([sys.executable, "-m", "lab", "up"])
        elapsed, out = run(playbook)
        first.append(elapsed)
        changed_first.append(sum(map(int, re.findall(r"changed=(\d+)", out))))
        elapsed, out = run(playbook)
        second.append(elapsed)
        changed_second.append(sum(map(int, re.findall(r"changed=(\d+)", out))))
    run([sys.executable, "-m", "lab", "down"])
    rows = [("site.yml first run (median)", statistics.median(first), 60),
            ("site.yml second run (median)", statistics.median(second), 30)]
    print(f"{'measure':36} {'value':>8}  {'target':>8}")
    for name, value, target in rows:
        print(f"{name:36} {value:>6.2f} s < {target:>5} s {'ok' if value < target else 'OVER'}")
    print(f"tasks changed: first runs {changed_first}, second runs {changed_second}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "site.json").write_text(json.dumps(
        {"first_s": first, "second_s": second, "changed_first": changed_first, "changed_second": changed_second},
        indent=2))
    return 0 if not any(changed_second) else 1


if __name__ == "__main__":
    sys.exit(main())
