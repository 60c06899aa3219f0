*** Comments ***
nitro_mcu smoke test for Renode (passes on Renode 1.15.3).  Run with a real Renode:
    renode-test renode/smoke.robot --variable ELF:/abs/path/fw.elf
CI checks this file without Renode:
    robot --dryrun --variable RENODEKEYWORDS:/abs/path/renode/stub_keywords.robot renode/smoke.robot
The ELF must be a UART build (io='uart') of firmware/selftest.c with -DSELFTEST_NO_FILE.

*** Settings ***
Resource            ${RENODEKEYWORDS}
Suite Setup         Setup
Suite Teardown      Teardown
Test Teardown       Test Teardown

*** Variables ***
${ELF}              ${CURDIR}/../build/renode/fw.elf
${REPL}             ${CURDIR}/mps2-an386.repl
${UART}             sysbus.uart0
${TIMEOUT}          60

*** Keywords ***
Create Nitro Machine
    Execute Command             mach create "nitro-m4"
    Execute Command             machine LoadPlatformDescription @${REPL}
    Execute Command             sysbus LoadELF @${ELF}
    Create Terminal Tester      ${UART}    timeout=${TIMEOUT}

*** Test Cases ***
Selftest Should Print The Sentinel On UART
    Create Nitro Machine
    Start Emulation
    Wait For Line On Uart       NITRO selftest
    Wait For Line On Uart       div -3
    Wait For Line On Uart       mul64 -8641975230000
    Wait For Line On Uart       NITRO-DONE 0

Selftest Should Report An Instruction Count
    Create Nitro Machine
    Start Emulation
    Wait For Line On Uart       NITRO-DONE 0
    ${insns}=                   Execute Command    sysbus.cpu ExecutedInstructions
    Log To Console              executed instructions: ${insns}
