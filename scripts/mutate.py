"""Mutation testing of the arithmetic: change one rounding, shift, clip or bound at a time and see a test fail.

Each mutant is one textual change, made by a regex operator on one line of a file found by glob: the trainer's
arithmetic (nitro_mcu/trainer/*.py), the C kernel templates (templates/**/*.j2, whichever layout) and the
generator's width choices (nitro_mcu/codegen/*.py).  The mutant is written into a private copy of the
repository's tracked files (a temporary folder; the working tree is never touched), the test files relevant
to the mutated file run there (``pytest -x``, time-boxed), and the mutant is *killed* when they fail (or time
out) and *survived* when they pass.  Why a small self-written operator set rather than mutmut or cosmic-ray:
those mutate Python only (the C templates are Jinja text), and their generic operators spend the time budget on
mutants of no arithmetic interest; the operators here are the ones an off-by-one in a proof would produce.

    python3 scripts/mutate.py --list                 # every mutant, no tests run
    python3 scripts/mutate.py --budget 40 --minutes 45
    python3 scripts/mutate.py --only chunk_pairs_x2,limb_top_half

The named mutants of issue 22 always run first; the rest are drawn from the enumeration with ``--seed``.
Prints one line per mutant and a killed/survived summary; exit status 1 if a mutant survived.
"""
from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Files mutated (globs), and the tests that guard each group.
TARGETS = {
    "trainer": (["nitro_mcu/trainer/arith.py", "nitro_mcu/trainer/gemm.py", "nitro_mcu/trainer/layers.py",
                 "nitro_mcu/trainer/optim.py", "nitro_mcu/trainer/intgemm.py", "nitro_mcu/trainer/convgrad.py",
                 "nitro_mcu/trainer/blocks.py"],
                ["tests/test_bounds.py", "tests/test_exactness.py", "tests/test_intgemm.py"]),
    "templates": (["templates/*kernels*.j2", "templates/kernels/**/*.j2"],
                  ["tests/test_bounds.py", "tests/test_codegen.py::test_generated_c_is_exact_from_grown_weights_and_partial_batches",
                   "tests/test_fuzz.py::test_fast_path_int64_and_compiled_c_train_random_models_identically",
                   "tests/test_fuzz.py::test_random_models_train_bit_exactly_on_the_emulated_m4"]),
    "codegen": (["nitro_mcu/codegen/walk.py", "nitro_mcu/codegen/plan.py", "nitro_mcu/codegen/render.py"],
                ["tests/test_bounds.py", "tests/test_codegen.py::test_generated_c_is_exact_from_grown_weights_and_partial_batches",
                 "tests/test_fuzz.py::test_fast_path_int64_and_compiled_c_train_random_models_identically"]),
}

# Lines worth mutating: arithmetic on bounds, clips, shifts and roundings (comments and docstrings excluded).
INTEREST = re.compile(r"2\*\*|<<|>>|EXACT|_MAX|_MIN|nitro_sat|saturat|clip|bound|limit|tdiv|trunc|// |\+ 1|- 1\b")


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    line: int  # 1-based
    old: str
    new: str

    def describe(self) -> str:
        return f"{self.path}:{self.line}: {self.old.strip()}  ->  {self.new.strip()}"


def _pow(m):  # 2**k -> 2**(k+1)
    return f"2**{int(m.group(1)) + 1}"


# (name, regex, replacement): each match of the regex in an interesting line is one mutant.
OPERATORS = [
    ("pow2_up", re.compile(r"2\*\*(\d+)"), _pow),
    ("shift_up", re.compile(r"<< (\d+)\b"), lambda m: f"<< {int(m.group(1)) + 1}"),
    ("drop_plus1", re.compile(r" \+ 1\b"), lambda m: ""),
    ("drop_minus1", re.compile(r" - 1\b"), lambda m: ""),
    ("lt_to_le", re.compile(r"(?<![<>=!])< (?!=)"), lambda m: "<= "),
    ("le_to_lt", re.compile(r"<= "), lambda m: "< "),
    ("ge_to_gt", re.compile(r">= "), lambda m: "> "),
    ("sat_bits_down", re.compile(r"nitro_sat\(([^;]*), (\d+)\)"), lambda m: f"nitro_sat({m.group(1)}, {int(m.group(2)) - 2})"),
    ("int32_max_x2", re.compile(r"< INT32_MAX"), lambda m: "< 2 * INT32_MAX"),
    ("floor_for_trunc", re.compile(r"np\.trunc\("), lambda m: "np.floor("),
    ("rescale_ignored", re.compile(r"\(x\.bound \* rescale\) // 1000"), lambda m: "x.bound"),
]

# The mutations issue 22 named (each survived the suite before it; its two float-carrier ones went with the
# carriers, issue 25), the two bounds of the native kernels' limbs and int32 chunks, and three breaks of the conv
# entries' packing and unpack, pinned by their exact text.
NAMED = {
    "chunk_pairs_x2": ("nitro_mcu/trainer/intgemm.py", "INT32_MAX // (2 * max(1, la) * max(1, lb))",
                       "INT32_MAX // (max(1, la) * max(1, lb))"),
    "limb_top_half": ("nitro_mcu/trainer/intgemm.py", "while m > half - 1:", "while m > half:"),
    "int16_sgd_clip_16": ("templates/**/*.j2", "(int32_t)g / (int32_t)div, 18)", "(int32_t)g / (int32_t)div, 16)"),
    "dropout_rescale_bound": ("nitro_mcu/codegen/walk.py", "(x.bound * rescale) // 1000", "x.bound"),
    "fast_update_2_32": ("nitro_mcu/codegen/walk.py", "* x_bound <= 2**30", "* x_bound <= 2**32"),
    # nitro_conv_entries' unpack at the first delta past 2^15 (tests/test_bounds.py reaches it on purpose)
    "entries_unpack_unsigned": ("templates/**/*.j2", "(nitro_delta_t)(lo >= 32768 ? lo - 65536 : lo)",
                                "(nitro_delta_t)lo"),
    "entries_unpack_offset_plus1": ("templates/**/*.j2", "(nitro_delta_t)(pk >> 16);", "(nitro_delta_t)(pk >> 16) + 1;"),
    "entries_pack_offset_plus1": ("templates/**/*.j2", "(nitro_delta_t)(off * 65536 +", "(nitro_delta_t)((off + 1) * 65536 +"),
}


def _files(globs) -> list[str]:
    out = []
    for g in globs:
        out += sorted(str(p.relative_to(REPO)) for p in REPO.glob(g) if p.is_file())
    return sorted(set(out))


def _code_lines(path: str):
    """(number, line) of the lines that are code: Python docstrings and comments, C comments left out."""
    text = (REPO / path).read_text().splitlines()
    in_doc = in_c = False
    for i, line in enumerate(text, 1):
        s = line.strip()
        if path.endswith(".py"):
            if s.count('"""') == 1:
                in_doc = not in_doc
                continue
            if in_doc or s.startswith("#") or s.startswith('"""'):
                continue
            code = line.split("  #")[0]
        else:
            if in_c:
                if "*/" in s:
                    in_c = False
                continue
            if s.startswith("/*") or s.startswith("*") or s.startswith("//") or s.startswith("{#"):
                in_c = "*/" not in s and s.startswith("/*")
                continue
            code = re.sub(r"/\*.*?\*/", "", line)
        yield i, code


def group_of(path: str) -> str:
    return next(g for g, (globs, _) in TARGETS.items() if path in _files(globs))


def enumerate_mutants() -> list[Mutant]:
    out = []
    for group, (globs, _) in TARGETS.items():
        for path in _files(globs):
            lines = (REPO / path).read_text().splitlines()
            for i, code in _code_lines(path):
                if not INTEREST.search(code):
                    continue
                for name, rx, rep in OPERATORS:
                    for m in rx.finditer(code):
                        new = lines[i - 1][:m.start()] + rep(m) + lines[i - 1][m.end():]
                        if new != lines[i - 1]:
                            tag = f"{name}@{Path(path).name}:{i}"
                            n = sum(o.name.split("#")[0] == tag for o in out)
                            out.append(Mutant(tag + (f"#{n + 1}" if n else ""), path, i, lines[i - 1], new))
    return out


def named_mutants() -> list[Mutant]:
    out = []
    for name, (glob, old, new) in NAMED.items():
        for path in _files([glob]):
            lines = (REPO / path).read_text().splitlines()
            hits = [i for i, line in enumerate(lines, 1) if old in line]
            if hits:
                i = hits[0]
                out.append(Mutant(name, path, i, lines[i - 1], lines[i - 1].replace(old, new)))
                break
        else:
            print(f"named mutant {name}: its text {old!r} is no longer in {glob}", file=sys.stderr)
    return out


def _copy_repo(dst: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    for f in files:
        if f and (REPO / f).is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, dst / f)


def run_mutant(mut: Mutant, work: Path, timeout: float, tests=None) -> tuple[str, float, str]:
    """('killed' | 'survived' | 'timeout', seconds, the first failing test)."""
    f = work / mut.path
    orig = f.read_text()
    lines = orig.splitlines(keepends=True)
    lines[mut.line - 1] = mut.new + ("\n" if lines[mut.line - 1].endswith("\n") else "")
    f.write_text("".join(lines))
    env = dict(os.environ, PYTHONPATH=str(work), OPENBLAS_NUM_THREADS="1",
               NITRO_MCU_CACHE=str(work / ".cache"))
    tests = tests or TARGETS[group_of(mut.path)][1]
    t0 = time.time()
    try:
        p = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-n", "0", "-p", "no:cacheprovider",
                            *tests], cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
        failed = re.findall(r"^FAILED (\S+)", p.stdout, re.M) or re.findall(r"^ERROR (\S+)", p.stdout, re.M)
        verdict = "killed" if p.returncode != 0 else "survived"
        first = failed[0] if failed else ("" if p.returncode == 0 else p.stdout.strip().splitlines()[-1:][0])
    except subprocess.TimeoutExpired:
        verdict, first = "timeout", ""
    finally:
        f.write_text(orig)
    return verdict, time.time() - t0, first


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=40, help="mutants to run (the named ones first)")
    ap.add_argument("--minutes", type=float, default=45.0, help="stop starting mutants after this long")
    ap.add_argument("--timeout", type=float, default=240.0, help="seconds per mutant's tests (then: killed)")
    ap.add_argument("--seed", type=int, default=22)
    ap.add_argument("--only", default="", help="comma-separated mutant names (named ones or from --list)")
    ap.add_argument("--tests", default="", help="comma-separated test ids instead of each group's tests")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    a = ap.parse_args(argv)
    named = named_mutants()
    pool = enumerate_mutants()
    if a.list:
        for m in named + pool:
            print(f"{m.name:40} {m.describe()}")
        print(f"{len(named)} named + {len(pool)} enumerated mutants")
        return 0
    if a.only:
        want = set(a.only.split(","))
        chosen = [m for m in named + pool if m.name in want]
    else:
        named_keys = {(m.path, m.line, m.new) for m in named}
        rest = [m for m in pool if (m.path, m.line, m.new) not in named_keys]
        random.Random(a.seed).shuffle(rest)
        chosen = (named + rest)[:a.budget]
    t0, deadline = time.time(), time.time() + 60 * a.minutes
    results = []
    with tempfile.TemporaryDirectory(prefix="nitro-mutants-") as d:
        work = Path(d)
        _copy_repo(work)
        for m in chosen:
            if time.time() > deadline:
                print(f"time budget spent: {len(chosen) - len(results)} mutant(s) not run")
                break
            verdict, secs, first = run_mutant(m, work, a.timeout, [t for t in a.tests.split(",") if t])
            results.append((m, verdict))
            print(f"{verdict:8} {secs:5.0f}s {m.name:34} {m.describe()}" + (f"  [{first}]" if first else ""),
                  flush=True)
    killed = sum(v != "survived" for _, v in results)
    print(f"mutants run: {len(results)}  killed: {killed}  survived: {len(results) - killed}  "
          f"({time.time() - t0:.0f} s)")
    for m, v in results:
        if v == "survived":
            print(f"SURVIVED {m.name}: {m.describe()}")
    return 1 if killed < len(results) else 0


if __name__ == "__main__":
    sys.exit(main())
