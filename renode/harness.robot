*** Comments ***
nitro_mcu: run a harness firmware built with the embedded transport (commands compiled in, results as
"RES <hex>" lines on UART0) and keep the whole UART output in ${LOG}.  `nitro-mcu run --emulator renode`
runs it as:
    renode-test renode/harness.robot --variable ELF:/abs/fw.elf --variable LOG:/abs/uart.log
UNVERIFIED here: Renode cannot be installed on the project machines; CI checks it with robot --dryrun.

*** Settings ***
Resource            ${RENODEKEYWORDS}
Suite Setup         Setup
Suite Teardown      Teardown
Test Teardown       Test Teardown

*** Variables ***
${ELF}              ${CURDIR}/../build/renode/fw.elf
${LOG}              ${CURDIR}/../build/renode/uart.log
${REPL}             ${CURDIR}/mps2-an386.repl
${TIMEOUT}          600

*** Test Cases ***
Harness Should Finish With Status Zero
    Execute Command             mach create "nitro-harness"
    Execute Command             machine LoadPlatformDescription @${REPL}
    Execute Command             sysbus LoadELF @${ELF}
    Execute Command             sysbus.uart0 CreateFileBackend @${LOG} true
    Create Terminal Tester      sysbus.uart0    timeout=${TIMEOUT}
    Start Emulation
    Wait For Line On Uart       NITRO-DONE 0
