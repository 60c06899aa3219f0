"""The device wing: Cortex-M targets and toolchains, firmware builds, emulators (QEMU, Unicorn, Renode), the
harness protocol, bit-exact verification against the trainer and the cost report (docs/toolchain.md)."""
