"""The Renode path from an installed wheel: the files ship inside the package, ``--emulator renode`` finds them,
and its runner decodes a run correctly.  So that this runs in CI, where Renode is absent, a stand-in
``renode-test`` (below) dry-runs the packaged suite with Robot and then runs the ELF in Unicorn, writing the UART
log and the RAM results where Renode would write them.  The real Renode runs are in tests/test_emulator.py (skipped without Renode).
README and ``--help`` name the Renode version the Renode path was tested with."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RENODE_FILES = ["README.md", "harness.robot", "mps2-an386.repl", "run.resc", "smoke.robot",
                "stm32f4_discovery.repl", "stm32f4_discovery_kit_offline.repl", "stub_keywords.robot"]

# renode-test SUITE -r DIR --variable NAME:VALUE ..., as nitro_mcu.device.renode calls it
FAKE_RENODE_TEST = '''\
#!{python}
import subprocess, sys
from pathlib import Path
suite = Path(sys.argv[1])
args = sys.argv[2:]
var = dict(args[i + 1].split(":", 1) for i, a in enumerate(args) if a == "--variable")
assert "-r" in args and set(("ELF", "LOG", "INSNS", "REPL", "UART", "VTOR", "TIMEOUT", "RESBUF", "RESFILL",
                             "RESULTS")) <= set(var), args
assert suite.is_file() and (suite.parent / "mps2-an386.repl").is_file(), suite
dry = subprocess.run([sys.executable, "-m", "robot", "--dryrun", "--output", "NONE", "--report", "NONE", "--log",
                      "NONE", "--variable", "RENODEKEYWORDS:" + str(suite.parent / "stub_keywords.robot"),
                      *[x for k, v in var.items() for x in ("--variable", k + ":" + v)], str(suite)],
                     capture_output=True, text=True)
assert dry.returncode == 0, dry.stdout
from nitro_mcu.device.unicorn import run_unicorn
def read_out(read):                     # what the suite's python command does after the run
    fill = int(var["RESFILL"], 0)
    n = int.from_bytes(read(fill, 4), "little") if fill else 0
    Path(var["RESULTS"]).write_bytes(read(int(var["RESBUF"], 0), n) if n else b"")
r = run_unicorn(var["ELF"], "m4", timeout=60, check=False, at_exit=read_out)
Path(var["LOG"]).write_text(r.stdout)
print("stand-in renode-test:", suite)
sys.exit(0 if r.sentinel_status == 0 else 1)
'''

VERIFY = textwrap.dedent('''\
    import sys
    sys.path.insert(0, sys.argv[1])
    sys.path.insert(0, sys.argv[2])
    import nitro_mcu
    from nitro_mcu.device.targets import RENODE_DIR
    from nitro_mcu.device.verify import verify
    from nitro_mcu.trainer.network import Model
    from device_cases import TINY, Synthetic
    assert nitro_mcu.__file__.startswith(sys.argv[1]), nitro_mcu.__file__
    print("renode files:", RENODE_DIR)
    rep = verify(Model(TINY, "default", 16, seed=3), Synthetic((64,)), "m4", steps=3, batch=4, predictions=10,
                 emulator="renode", name="ren")
    print(rep.table())
    print(rep.problem() or "bit-exact")
    sys.exit(0 if rep.passed else 1)
''')


def test_wheel_ships_the_renode_files_and_the_renode_runner_works_from_it(tmp_path):
    # built from a copy of the tree, so that it never shares build/ with another wheel build of the suite
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__", "out",
                                                             ".benchmarks", ".pytest_cache"))
    wheel_dir = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(wheel_dir), str(src)], check=True, capture_output=True)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
                    str(next(wheel_dir.glob("*.whl")))], check=True, capture_output=True)
    packaged = site / "nitro_mcu" / "renode"
    assert sorted(p.name for p in packaged.iterdir()) == sorted(RENODE_FILES)
    for name in RENODE_FILES:
        assert (packaged / name).read_bytes() == (REPO / "renode" / name).read_bytes(), name

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "renode-test"
    fake.write_text(FAKE_RENODE_TEST.format(python=sys.executable))
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(site))
    env.pop("NITRO_FIRMWARE_DIR", None)
    r = subprocess.run([sys.executable, "-c", VERIFY, str(site), str(REPO / "tests")], capture_output=True,
                       text=True, cwd=tmp_path, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"renode files: {packaged}" in r.stdout and r.stdout.rstrip().endswith("bit-exact")


def test_readme_and_help_name_the_tested_renode_version():
    from nitro_mcu.device.renode import RENODE_TESTED

    assert f"Renode {RENODE_TESTED}" in (REPO / "README.md").read_text()
    assert f"Renode {RENODE_TESTED}" in (REPO / "renode" / "README.md").read_text()
    for cmd in ("verify", "run"):
        out = subprocess.run([sys.executable, "-m", "nitro_mcu.cli", cmd, "--help"], capture_output=True,
                             text=True, check=True).stdout
        assert f"Renode {RENODE_TESTED}" in " ".join(out.split()), out
