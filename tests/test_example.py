"""examples/stream_classifier: a user application linking a generated model through its CMake target, built
for the host and, with the example's toolchain files, for the Cortex-M4 (arm-none-eabi) and RV32IMC
(riscv64-unknown-elf, picolibc), run in QEMU; all print the same lines, and the model learns on the device."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nitro_mcu.device.elf import no_float_proof
from nitro_mcu.device.qemu import qemu_command
from nitro_mcu.device.targets import get_target

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "stream_classifier"
TOOLCHAIN = REPO / "examples" / "cmake" / "arm-none-eabi-cortex-m4.cmake"
RV32_TOOLCHAIN = REPO / "examples" / "cmake" / "riscv64-unknown-elf-rv32imc.cmake"


def sh(cmd, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, **kw)
    assert r.returncode == 0, f"{cmd}\n{r.stdout}\n{r.stderr}"
    return r


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """The model as the README's step 1 generates it."""
    out = tmp_path_factory.mktemp("fw") / "sensor"
    sh([sys.executable, "-m", "nitro_mcu.cli", "generate", EXAMPLE / "sensor.json", "--train", "--batch", "8",
        "--name", "sensor", "--out", out], cwd=REPO)
    assert sorted(p.name for p in out.iterdir()) == ["CMakeLists.txt", "sensor.c", "sensor.h", "sensor.mk",
                                                     "sensor_kernels.h"]
    return out


def configure_and_build(src, build, *extra):
    sh(["cmake", "-S", src, "-B", build, *extra])
    sh(["cmake", "--build", build, "--parallel", "2"])


def accuracies(stdout: str) -> list[int]:
    return [int(v) for v in re.findall(r": (\d+) % classified right", stdout)]


@pytest.fixture(scope="module")
def host_run(model_dir, tmp_path_factory):
    build = tmp_path_factory.mktemp("host")
    configure_and_build(EXAMPLE, build, f"-DNITRO_MODEL_DIR={model_dir}", "-DCMAKE_C_FLAGS=-Wall -Wextra -Werror")
    return build, sh([build / "stream_classifier"]).stdout


def test_the_example_learns_on_the_host(host_run):
    _, out = host_run
    acc = accuracies(out)
    assert out.startswith("stream_classifier: 1280 int16 weights") and out.rstrip().endswith("done"), out
    assert len(acc) == 8 and acc[0] < 40 and acc[-1] >= 85, acc  # from chance (25 %) to most windows right


def test_the_readme_quotes_what_the_program_prints(host_run):
    """The example README's output block: every line it shows (between the '...') is a line of the program's."""
    _, out = host_run
    text = (EXAMPLE / "README.md").read_text()
    block = re.search(r"```text\n(stream_classifier:.*?)```", text, re.S).group(1)
    shown = [line for line in block.splitlines() if line != "..."]
    assert len(shown) >= 3 and all(line in out.splitlines() for line in shown), (shown, out)


def test_the_example_cross_builds_for_the_cortex_m4_and_runs_in_qemu_like_the_host(host_run, model_dir,
                                                                                  tmp_path):
    _, host_out = host_run
    build = tmp_path / "m4"
    configure_and_build(EXAMPLE, build, f"-DCMAKE_TOOLCHAIN_FILE={TOOLCHAIN}", f"-DNITRO_MODEL_DIR={model_dir}")
    elf = build / "stream_classifier.elf"
    assert no_float_proof(elf) == []
    r = subprocess.run(qemu_command(elf, "m4"), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == host_out  # integer-only: the same digits on the MCU
    ctest = sh(["ctest", "--output-on-failure"], cwd=build)  # the README's way: QEMU as CMake's emulator
    assert "100% tests passed" in ctest.stdout


def test_the_example_cross_builds_for_rv32imc_and_runs_in_qemu_like_the_host(host_run, model_dir, tmp_path):
    _, host_out = host_run
    build = tmp_path / "rv32imc"
    configure_and_build(EXAMPLE, build, f"-DCMAKE_TOOLCHAIN_FILE={RV32_TOOLCHAIN}", f"-DNITRO_MODEL_DIR={model_dir}")
    elf = build / "stream_classifier.elf"
    assert elf.read_bytes()[18:20] == (243).to_bytes(2, "little")   # EM_RISCV
    assert no_float_proof(elf) == []
    r = subprocess.run(qemu_command(elf, "rv32imc"), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == host_out
    ctest = sh(["ctest", "--output-on-failure"], cwd=build)
    assert "100% tests passed" in ctest.stdout


def test_the_rv32_toolchain_file_uses_the_targets_flags_machine_and_linker_script():
    text = RV32_TOOLCHAIN.read_text()
    rv = get_target("rv32imc")
    for flag in rv.cpu_flags:
        assert flag in text, flag
    assert f"-M {rv.qemu_machine} {' '.join(rv.qemu_args)}" in text and f'"{rv.linker_script}"' in text


def test_the_toolchain_file_uses_the_targets_cpu_and_abi_flags():
    text = TOOLCHAIN.read_text()
    m4 = get_target("m4")
    for flag in (*m4.cpu_flags, "-mthumb", "-mfloat-abi=soft"):
        assert flag in text, flag
    assert f"-M {m4.qemu_machine}" in text and m4.linker_script in (EXAMPLE / "CMakeLists.txt").read_text()


def test_configure_generates_the_model_itself(tmp_path):
    """Without NITRO_MODEL_DIR, configuring runs `nitro-mcu generate` (here through NITRO_MCU)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    sh(["cmake", "-S", EXAMPLE, "-B", tmp_path, f"-DNITRO_MCU={sys.executable};-m;nitro_mcu.cli"], env=env)
    assert (tmp_path / "sensor" / "sensor.h").is_file()
    bad = subprocess.run(["cmake", "-S", EXAMPLE, "-B", tmp_path / "bad", "-DNITRO_MCU=false"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "nitro-mcu generate failed" in bad.stderr


def test_the_example_links_a_users_own_model_and_prints_its_weight_width(tmp_path):
    """Step 1 with another description (int32 weights, 48 inputs): the program reports that model, not sensor.json's."""
    (tmp_path / "own.json").write_text('{"kind": "mlp", "input_shape": [48], "num_classes": 4, "hidden": [16]}')
    sh([sys.executable, "-m", "nitro_mcu.cli", "generate", tmp_path / "own.json", "--train", "--weights", "int32",
        "--name", "sensor", "--out", tmp_path / "sensor"], cwd=REPO)
    configure_and_build(EXAMPLE, tmp_path / "host", f"-DNITRO_MODEL_DIR={tmp_path / 'sensor'}")
    out = sh([tmp_path / "host" / "stream_classifier"]).stdout
    weights = 48 * 16 + 16 * 4 + 16 * 4  # block0, its head, the output layer
    assert out.startswith(f"stream_classifier: {weights} int32 weights") and out.rstrip().endswith("done"), out
