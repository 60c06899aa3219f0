"""Run the embedded-transport harness under Renode (renode/harness.robot) and decode its UART log.

Never run on Renode: Renode cannot be installed on the project machines, and its files are checked by a Robot dry
run only.  The same firmware and decoding are tested on QEMU
(tests/test_emulator.py::test_embedded_transport_over_uart_matches_python), and this runner, from an installed
wheel, with a stand-in ``renode-test`` that runs the ELF in QEMU (tests/test_renode_packaging.py).
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from ..codegen import Converted
from .harness import McuRun, build_mcu
from .protocol import HarnessError, Session, check_sentinel, parse_console_results, parse_results
from .targets import RENODE_DIR


def run_renode(conv: Converted, session: Session, target: str, timeout: float) -> McuRun:
    """Build the harness with ``session`` compiled in, run it in renode-test and decode the results."""
    exe = shutil.which("renode-test")
    if exe is None:
        raise HarnessError("Renode is not installed (renode-test is not on PATH; it has no Debian package, see "
                           "renode/README.md); use --emulator qemu")
    if target != "m4":
        raise HarnessError("the Renode platform in renode/ models mps2-an386: use --target m4")
    b = build_mcu(conv, target, None, io="uart", embedded_cmd=session.to_bytes())
    with tempfile.TemporaryDirectory(prefix="nitro-renode-") as d:
        log = Path(d) / "uart.log"
        proc = subprocess.run([exe, str(RENODE_DIR / "harness.robot"), "--variable", f"ELF:{b.elf}",
                               "--variable", f"LOG:{log}"], capture_output=True, text=True, timeout=timeout + 60,
                              stdin=subprocess.DEVNULL)
        out = log.read_text() if log.is_file() else ""
    check_sentinel(out, proc.stdout + proc.stderr, 0 if proc.returncode == 0 else proc.returncode)
    return McuRun(parse_results(parse_console_results(out), conv, session.expect), b, None, None)
