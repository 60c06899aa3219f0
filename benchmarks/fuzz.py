"""Long differential fuzzing: random models trained by the fast path, pure int64 and the host-compiled C.

The same cases and comparison as tests/test_fuzz.py (tests/fuzz_cases.py), from the wide space (4096-wide layers,
255 classes, batch up to 1,000, up to 300 steps) unless ``--narrow``; runs until ``--cases`` cases or ``--minutes``
have passed and prints the cases run and the disagreements (each shrunk by Hypothesis to a small case)::

    python3 benchmarks/fuzz.py --minutes 10
    python3 benchmarks/fuzz.py --cases 50 --seed 3 --narrow

Exit status 1 when a disagreement was found.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402

import fuzz_cases as F  # noqa: E402

ROUND = 10  # cases per Hypothesis run (the time limit is checked between runs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10**6, help="stop after this many cases")
    ap.add_argument("--minutes", type=float, default=5.0, help="stop after this many minutes")
    ap.add_argument("--seed", type=int, default=0, help="Hypothesis seed (a run is reproducible from it)")
    ap.add_argument("--narrow", action="store_true", help="the CI test's space instead of the wide one")
    ap.add_argument("--no-shrink", action="store_true", help="report the first failing case as drawn")
    a = ap.parse_args(argv)
    t0, deadline = time.time(), time.time() + 60 * a.minutes
    stats = {"run": 0, "bad": 0}
    phases = [Phase.generate] + ([] if a.no_shrink else [Phase.shrink])
    rnd = 0
    while stats["run"] < a.cases and time.time() < deadline:  # rounds of ROUND cases, each from its own seed

        @seed(a.seed * 1000 + rnd)
        @settings(max_examples=min(ROUND, a.cases - stats["run"]), deadline=None, database=None, phases=phases,
                  print_blob=True, suppress_health_check=list(HealthCheck))
        @given(F.cases(big=not a.narrow))
        def one(case):
            problems = F.run_case(case, name="fzlong")
            stats["run"] += 1
            assert not problems, "\n".join(problems)

        try:
            one()
        except AssertionError as e:
            stats["bad"] += 1
            print(f"DISAGREEMENT (round {rnd}, shrunk):\n{e}", flush=True)
        rnd += 1
        print(f"{stats['run']} cases, {stats['bad']} disagreements, {time.time() - t0:.0f} s", flush=True)
    print(f"cases run: {stats['run']}  disagreements: {stats['bad']}  ({time.time() - t0:.0f} s, seed {a.seed}, "
          f"{'narrow' if a.narrow else 'wide'} space)")
    return 1 if stats["bad"] else 0

if __name__ == "__main__":
    sys.exit(main())
