# CMake toolchain file: bare-metal RV32IMC (ESP32-C3 class) with Debian's RISC-V toolchain and picolibc (apt:
# gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf), ilp32 soft-float ABI, as nitro_mcu's own firmware builds
# for --target rv32imc (nitro_mcu/device/targets.py, flags.py).
# Tests run in QEMU's RISC-V virt board (apt: qemu-system-misc) with the CPU cut down to RV32IMC, console and exit
# over semihosting.
set(CMAKE_SYSTEM_NAME Generic)
set(CMAKE_SYSTEM_PROCESSOR riscv32)
set(CMAKE_C_COMPILER riscv64-unknown-elf-gcc)
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)  # no startup code yet: probe the compiler without linking
# picolibc's specs file supplies its headers to every compile and its library to the link
set(CMAKE_C_FLAGS_INIT "-march=rv32imc -mabi=ilp32 --specs=picolibc.specs -ffunction-sections -fdata-sections")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
# the board's linker script (firmware/ld/); no second specs file at the link (picolibc's is in the C flags)
set(NITRO_LINKER_SCRIPT "rv32-virt-400k.ld" CACHE STRING "cross builds: the board's linker script in firmware/ld/")
set(NITRO_LIBC_SPECS "" CACHE STRING "cross builds: the C library's specs file for the link")
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-system-riscv32 -M virt -bios none -cpu rv32,a=off,f=off,d=off,c=on,m=on
    -display none -monitor none -serial null
    -chardev stdio,id=sh0 -semihosting-config enable=on,target=native,chardev=sh0 -kernel)
