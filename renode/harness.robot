*** Comments ***
nitro_mcu: run a harness firmware built with the embedded transport (commands compiled in, results kept in a
RAM buffer, or as "RES <hex>" lines on the UART).  `nitro-mcu verify/run/report --emulator renode` runs it as
    renode-test renode/harness.robot -r <dir> --variable ELF:/abs/fw.elf --variable LOG:/abs/uart.log
        --variable INSNS:/abs/insns.txt --variable REPL:<platform .repl> --variable UART:sysbus.uart0
        --variable VTOR:0x0 --variable TIMEOUT:<s> --variable RESBUF:<addr> --variable RESFILL:<addr>
        --variable RESULTS:/abs/results.bin
The results leave the board the fast way: the console goes through the UART into a file backend, and the
results stay in the board's RAM (nitro_res_ram at RESBUF, its fill count at RESFILL; RESFILL 0x0: none), which
the suite copies into RESULTS after the run with one read of the bus.  No terminal tester is attached (it would
inspect every byte and run ~60x slower); the suite polls the log for the NITRO-DONE sentinel line, pauses the
machine, stores the CPU's ExecutedInstructions, reads the results out and passes on NITRO-DONE 0.
Tested with Renode 1.15.3; CI checks it with robot --dryrun against stub_keywords.robot.

*** Settings ***
Resource            ${RENODEKEYWORDS}
Library             OperatingSystem
Suite Setup         Setup
Suite Teardown      Teardown
Test Teardown       Test Teardown

*** Variables ***
${ELF}              ${CURDIR}/../build/renode/fw.elf
${LOG}              ${CURDIR}/../build/renode/uart.log
${INSNS}            ${CURDIR}/../build/renode/insns.txt
${REPL}             ${CURDIR}/mps2-an386.repl
${UART}             sysbus.uart0
${VTOR}             0x0
${TIMEOUT}          600
${POLL}             0.05s
${RESBUF}           0x0
${RESFILL}          0x0
${RESULTS}          ${CURDIR}/../build/renode/results.bin

*** Keywords ***
Sentinel Should Be In The Log
    ${lines}=                   Grep File    ${LOG}    NITRO-DONE
    Should Match Regexp         ${lines}    NITRO-DONE -?\\d+    msg=no NITRO-DONE line yet    values=False

*** Test Cases ***
Harness Should Finish With Status Zero
    Execute Command             mach create "nitro-harness"
    Execute Command             emulation SetGlobalAdvanceImmediately true
    Execute Command             emulation SetGlobalQuantum "0.01"
    Execute Command             machine LoadPlatformDescription @${REPL}
    Execute Command             sysbus LoadELF @${ELF}
    Execute Command             sysbus.cpu VectorTableOffset ${VTOR}
    Execute Command             ${UART} CreateFileBackend @${LOG} true
    Start Emulation
    Wait Until Keyword Succeeds    ${TIMEOUT}s    ${POLL}    Sentinel Should Be In The Log
    Execute Command             pause
    ${count}=                   Execute Command    sysbus.cpu ExecutedInstructions
    Create File                 ${INSNS}    ${count}
    Execute Command             python "import System; bus = monitor.Machine.SystemBus; n = int(bus.ReadDoubleWord(System.UInt64(${RESFILL}))) if ${RESFILL} else 0; System.IO.File.WriteAllBytes(r'${RESULTS}', bus.ReadBytes(System.UInt64(${RESBUF}), n))"
    ${done}=                    Grep File    ${LOG}    NITRO-DONE
    Should Match Regexp         ${done}    ^NITRO-DONE 0\\s*$    msg=the harness did not end with NITRO-DONE 0
