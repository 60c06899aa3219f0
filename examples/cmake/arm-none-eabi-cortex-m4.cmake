# CMake toolchain file: bare-metal Cortex-M4 with the GNU Arm toolchain (apt: gcc-arm-none-eabi
# libnewlib-arm-none-eabi), soft-float ABI, as nitro_mcu's own firmware builds (nitro_mcu/device/flags.py).
# Tests run in QEMU's mps2-an386 board (apt: qemu-system-arm), console and exit over semihosting.
set(CMAKE_SYSTEM_NAME Generic)
set(CMAKE_SYSTEM_PROCESSOR arm)
set(CMAKE_C_COMPILER arm-none-eabi-gcc)
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)  # no startup code yet: probe the compiler without linking
set(CMAKE_C_FLAGS_INIT "-mcpu=cortex-m4 -mthumb -mfloat-abi=soft -ffunction-sections -fdata-sections")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-system-arm -M mps2-an386 -display none -monitor none -serial null
    -chardev stdio,id=sh0 -semihosting-config enable=on,target=native,chardev=sh0 -kernel)
