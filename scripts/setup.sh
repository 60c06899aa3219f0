#!/usr/bin/env bash
# One-time set-up on a fresh Debian/Ubuntu machine: the ARM and RISC-V toolchains (newlib, picolibc), QEMU (arm,
# riscv32 from qemu-system-misc), clang (sanitizer builds), g++ and
# CMake (the C++ client and the CMake example of tests/test_c_api.py, tests/test_example.py), the AArch64 cross
# compiler and qemu-user (the NEON integer kernels, bit-exact under emulation: tests/test_intgemm_aarch64.py) and
# the Python package with its test extras.  Safe to re-run: installed packages are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
APT_PKGS="gcc-arm-none-eabi libnewlib-arm-none-eabi binutils-arm-none-eabi qemu-system-arm \
gcc-riscv64-unknown-elf binutils-riscv64-unknown-elf picolibc-riscv64-unknown-elf qemu-system-misc clang libclang-rt-14-dev gcc g++ make cmake \
gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user"
missing=""
for p in $APT_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing apt packages:$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi
python3 -m pip install -q --disable-pip-version-check -e ".[test]"
