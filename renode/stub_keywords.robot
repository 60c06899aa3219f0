*** Comments ***
Stub versions of the Renode keywords used by renode/*.robot, with empty bodies, so that
`robot --dryrun --variable RENODEKEYWORDS:<abs path of this file> renode/smoke.robot`
checks syntax and keyword names without Renode (docs/toolchain.md §8.3).
Add a stub here whenever a suite starts using another Renode keyword.

*** Keywords ***
Setup
    [Arguments]    @{args}    &{kwargs}
    No Operation

Teardown
    [Arguments]    @{args}    &{kwargs}
    No Operation

Test Setup
    [Arguments]    @{args}    &{kwargs}
    No Operation

Test Teardown
    [Arguments]    @{args}    &{kwargs}
    No Operation

Execute Command
    [Arguments]    @{args}    &{kwargs}
    No Operation

Execute Script
    [Arguments]    @{args}    &{kwargs}
    No Operation

Create Terminal Tester
    [Arguments]    @{args}    &{kwargs}
    No Operation

Start Emulation
    [Arguments]    @{args}    &{kwargs}
    No Operation

Reset Emulation
    [Arguments]    @{args}    &{kwargs}
    No Operation

Wait For Line On Uart
    [Arguments]    @{args}    &{kwargs}
    No Operation

Wait For Prompt On Uart
    [Arguments]    @{args}    &{kwargs}
    No Operation

Wait For Next Line On Uart
    [Arguments]    @{args}    &{kwargs}
    No Operation

Should Not Be On Uart
    [Arguments]    @{args}    &{kwargs}
    No Operation

Write Line To Uart
    [Arguments]    @{args}    &{kwargs}
    No Operation
