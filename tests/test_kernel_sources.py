"""The kernel templates are a layout, not a behaviour: the generated C of the models of tests/kernel_cases.py
must stay what each existing core compiles, whatever is added for other cores (issue 24).

One <name>_kernels.h serves every core through the preprocessor, so a new backend (NITRO_RV32) changes its text
for everyone; what must not change is what each core's compiler sees.  tests/generated_c_digests.json holds, per
case, the sha256 of <name>.h and <name>.c (the generation id masked: it hashes all three files) and of the
kernels preprocessed by each core of kernel_cases.CORES with its own firmware flags (`-E -P`, #include lines
left out), made by

    PYTHONPATH=$PWD python3 tests/kernel_cases.py > tests/generated_c_digests.json

History: the raw-text digests were taken with the pre-split generator (commit ceca4e5) and left as they were by
the split; regenerated at ac3ff18 (the M4 kernels' int8 widening and eight-step unroll) and at the merge of
issues 19-21.  The per-core form was taken at da05ac0 (the raw digests then still held), before the RV32
backend; since (issue 24): the RV32 backend and its kernels changed only rv32imc entries; the portable row update
and head error (faster on M0, M3, RV32) changed host, m0, m3 and rv32imc entries, and m4/m7/m33 entries of the
int32 cases (portable there) and, for the head error, of int16 training cases only in dead code after the DSP
part's return (object code identical, checked with objdump -d).
The merge of the M4 training kernels (issue 24 item 3) changed every core's entries of the training cases: its
shared step changes (entry lists packed as found, one UDIV for the padded offset, the head input gathered four per
pass, the int16 transposed batch of int16 models) reach host, m0, m3 and rv32imc too; m4/m7/m33 got the DSP steps.
The 2x2 max-pool fused into a conv's inference output stage (issue 24 item 3) changed every core's entries of the
int16 cases with a conv followed by a 2x2 pool (cnn_small_i16_train, mcu_cnn_i16_infer/_train, mcu_cnn_ref_i16_train,
mixed_all_i16_infer/_train): the acc32 conv kernel's pm path and the pooled wrappers (and, in the inference cases'
.h/.c, the smaller arena: a fused conv's unused s_ buffer); int32 (acc64) cases and the streamed tail are unchanged.
The M4 inference kernels (issue 24 item 3, executed MACs) changed only m4/m7/m33 entries: of every int16 case (the
DSP two-column steps start with SMUAD and unroll their passes; their text is in every int16 kernels file), and the
.h/.c of mcu_cnn_i16_infer/_train, mcu_cnn_ref_i16_train and mixed_all_i16_infer (a larger col: a fused conv's
whole pool window, or a one-channel conv's window row pair); host, m0, m3 and rv32imc entries are unchanged.
The faster RV32 kernels (issue 24 item 2: 3x3 convs in rows steps without im2col, the dot16x1/dot8x1 forward steps,
the class rows of the linear step, the head update and the output step updated in pairs, the unrolled widening and
transpose) changed only the rv32imc entries of the int16 cases: every addition is an RV32 part of an isa_select
spot, which the other cores' preprocessors drop.
The RV32 rows steps per executed MAC (issue 24 item 2: the first channel pass peeled, the fused pool and output
stage in the assembly step, the unrolled padded map) changed only rv32imc entries of the int16 conv cases.
The RV32 inference to 2.5 per executed MAC (issue 24 item 2: the padded map's rows copied fully unrolled, input
channels in groups of four or two at immediate offsets, a one-channel conv under a fused pool in whole windows)
changed only the rv32imc entries of the int16 conv cases.
Checkpoint format version 2 (the active-class count in a 52-byte header) changed only the pin.h/pin.c entries of
the training and tail cases (CKPT_VERSION, CKPT_BYTES and the checkpoint code); every kernels entry is unchanged.
The export's cached CRC dropped once delivered (a CRC chunk exported alone after a state change was the old
state's) changed only the pin.c entries of the training and tail cases; every kernels entry is unchanged.
The header comment of ckpt_import naming num_pages (it is read: a region shorter than a checkpoint is refused)
changed only the pin.h entries of the training and tail cases.
Names that shadowed an outer local under -Wshadow (the DSP 2x2 max-pool's words, the RV32 fused conv's output-stage
copies; the firmware builds now warn on shadowing) changed only the m4/m7/m33 and rv32imc kernels entries.
The unused ONE_HOT macro removed from the model's .c (-Wunused-macros) and the profiling prototypes declared once,
in the kernels header (-Wredundant-decls; both now in every firmware build's flags), changed only pin.c entries;
the kernels entries are preprocessed without warning flags (they select nothing) and are unchanged.
Regenerate ONLY when a kernel deliberately changes for a core (a faster kernel, a fix), and say in the commit
which cores' entries changed; a layout change, or a backend added for another core, must leave every other
core's digest as it is.
"""
import json
from pathlib import Path

import pytest
from kernel_cases import CASES, digests_of, missing_compilers, sources

DIGESTS = json.loads((Path(__file__).parent / "generated_c_digests.json").read_text())


def test_every_pinned_case_has_a_digest_and_every_digest_a_case():
    assert sorted(DIGESTS) == sorted(c[0] for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_each_core_compiles_the_same_kernels_as_the_pinned_generator(case):
    if missing_compilers():
        pytest.skip(f"no compiler for {', '.join(missing_compilers())} (docs/toolchain.md)")
    got = digests_of(case)
    assert got == DIGESTS[case[0]], f"{case[0]}: the generated C changed ({', '.join(f for f in got if got[f] != DIGESTS[case[0]].get(f))})"


# ---- the ISA table (nitro_mcu/codegen/isa.py): a new backend is one row plus the variant files it wants ----

def _env(files: dict):
    import jinja2

    from nitro_mcu.codegen import isa

    env = jinja2.Environment(loader=jinja2.DictLoader(files), trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    isa.install(env)
    return env


def test_a_spot_selects_each_backend_that_has_the_part_and_falls_back_to_portable(monkeypatch):
    from nitro_mcu.codegen import isa

    monkeypatch.setattr(isa, "ISAS", (isa.ISAS[0], isa.Isa("rv", "NITRO_RV", "defined(__riscv)", (16, 32), "RV32",
                                                           tiers={"asm": "NITRO_RV_ASM"})))
    env = _env({
        "kernels/portable/x.h.j2": "{% macro a() %}\nport a {{ v }}\n{% endmacro %}\n"
                                   "{% macro b() %}\nport b\n{% endmacro %}\n{% macro c() %}\nport c\n{% endmacro %}\n",
        "kernels/dsp/x.h.j2": "{% macro a() %}\ndsp a {{ v }}\n{% endmacro %}\n{% macro c() %}{% endmacro %}\n",
        "kernels/rv/x.h.j2": "{% macro a() %}\nrv a\n{% endmacro %}\n{% macro c() %}{% endmacro %}\n"
                             "{% macro d() %}\nrv d\n{% endmacro %}\n",
        "t": '{% set v = 7 %}{{ isa_select("x", "a") }}|{{ isa_select("x", "b") }}|{{ isa_select("x", "c") }}|'
             '{{ isa_select("x", "d") }}|{{ isa_select("x", "a", "asm") }}|{{ isa_select("y", "a") }}',
    })
    # "y" has no file anywhere: that is an error, never an empty spot
    with pytest.raises(Exception, match="y.a has no variant"):
        env.get_template("t").render()
    env.loader.mapping["t"] = env.loader.mapping["t"].rsplit("|", 1)[0]
    a, b, c, d, tier = env.get_template("t").render().split("|")
    assert a == "#if NITRO_DSP\ndsp a 7\n#elif NITRO_RV\nrv a\n#else\nport a 7\n#endif"
    assert b == "port b"                                  # no backend overrides it: no preprocessor test at all
    assert c == "#if !NITRO_DSP && !NITRO_RV\nport c\n#endif"  # empty on both backends: portable elsewhere only
    assert d == "#if NITRO_RV\nrv d\n#endif"              # a backend-only piece
    assert tier == "#if NITRO_ASM\ndsp a 7\n#elif NITRO_RV_ASM\nrv a\n#else\nport a 7\n#endif"


def test_backend_macros_are_defined_from_the_table_for_the_widths_each_serves(monkeypatch):
    from nitro_mcu.codegen import isa

    monkeypatch.setattr(isa, "ISAS", isa.ISAS[:1])
    assert isa.defines(32) == "#define NITRO_DSP 0"
    assert isa.defines(16) == ("#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP\n#define NITRO_DSP 1\n#else\n"
                               "#define NITRO_DSP 0\n#endif")
    monkeypatch.setattr(isa, "ISAS", (*isa.ISAS, isa.Isa("rv", "NITRO_RV", "defined(__riscv)", (16, 32), "RV32")))
    assert isa.defines(32) == "#define NITRO_DSP 0\n#if defined(__riscv)\n#define NITRO_RV 1\n#else\n#define NITRO_RV 0\n#endif"


def test_a_backend_without_a_tier_takes_that_tiers_spots_under_its_own_macro(monkeypatch):
    from nitro_mcu.codegen import isa

    monkeypatch.setattr(isa, "ISAS", (isa.ISAS[0], isa.Isa("rv", "NITRO_RV", "defined(__riscv)", (16,), "RV32")))
    env = _env({"kernels/portable/x.h.j2": "{% macro a() %}\nport a\n{% endmacro %}\n",
                "kernels/dsp/x.h.j2": "{% macro a() %}\ndsp a\n{% endmacro %}\n",
                "kernels/rv/x.h.j2": "{% macro a() %}\nrv a\n{% endmacro %}\n",
                "t": '{{ isa_select("x", "a", "asm") }}'})
    assert env.get_template("t").render() == "#if NITRO_ASM\ndsp a\n#elif NITRO_RV\nrv a\n#else\nport a\n#endif"


def test_a_new_row_without_files_changes_only_the_defines_and_still_compiles(monkeypatch, tmp_path):
    """The real templates: a further row with no variant files yet runs the portable kernels on its cores."""
    import subprocess

    from nitro_mcu.codegen import isa
    from nitro_mcu.device.flags import STRICT_CFLAGS

    case = next(c for c in CASES if c[0] == "mcu_cnn_i16_train")
    before = sources(case)["pin_kernels.h"]
    monkeypatch.setattr(isa, "ISAS", (*isa.ISAS, isa.Isa("x", "NITRO_X", "defined(__x_core__)", (16, 32), "X")))
    after = sources(case)
    added = "\n#if defined(__x_core__)\n#define NITRO_X 1\n#else\n#define NITRO_X 0\n#endif"
    anchor = "#define NITRO_RV32 0\n#endif"
    assert after["pin_kernels.h"].split("#define PIN_KERNELS_GENERATION")[0] == \
        before.replace(anchor, anchor + added, 1).split("#define PIN_KERNELS_GENERATION")[0]
    for f, t in after.items():
        (tmp_path / f).write_text(t)
    subprocess.run(["gcc", *STRICT_CFLAGS, "-c", str(tmp_path / "pin.c"), "-o", str(tmp_path / "pin.o")], check=True)
