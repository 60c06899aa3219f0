"""The instruction-set backends of the kernels: one table, one row per ISA (docs/codegen.md, "Kernel templates").

The generated C is target-agnostic: the C preprocessor picks the backend from the compiler's own macros, so
one ``<name>_kernels.h`` serves every core.  Each row names the macro that is 1 where the backend is compiled
(defined from ``condition`` at the top of the kernel file, for the weight widths it serves), the folder of its
kernel variants, ``templates/kernels/<name>/<op>.h.j2``, and optional tiers (a macro within the backend, such
as GCC inline assembly; a spot of a tier takes a backend without that tier under its own macro).
``templates/kernels/portable/<op>.h.j2`` is the fallback of every selection: it is
what cores without a backend (and the host) compile.

A kernel template marks an ISA-specific spot with ``{{ isa_select("<op>", "<part>") }}``; each variant file
holds its parts as Jinja macros.  The spot becomes ``#if <first backend with the part> ... #elif <next> ...
#else <portable> #endif``; a backend without that part (or without that file) falls back to the portable
code, so adding an ISA is one row here plus the variant files it wants.  An empty part means "nothing on
this backend" (``#if !NITRO_DSP`` around a portable-only piece).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import jinja2

PORTABLE = "portable"  # the folder of the portable C, compiled wherever no backend is selected


@dataclass(frozen=True)
class Isa:
    name: str                 # folder templates/kernels/<name>/
    macro: str                # 1 where this backend is compiled, else 0
    condition: str            # the preprocessor condition that selects it
    weight_bits: tuple        # the weight widths it serves; for the others the macro is 0
    cores: str                # for the docs and the generated comment
    tiers: dict = field(default_factory=dict)  # tier name -> macro (defined by the backend's own templates)


ISAS = (
    Isa("dsp", "NITRO_DSP", "defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP", (16,),
        "Armv7E-M DSP extension: Cortex-M4, M7, M33", tiers={"asm": "NITRO_ASM"}),
    Isa("rv32", "NITRO_RV32",
        "defined(__riscv) && __riscv_xlen == 32 && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__", (16,),
        "RV32IMC / RV32IMAC (no SIMD): register-blocked C, GCC assembly loops"),
)


def defines(weight_bits: int) -> str:
    """The ``#define`` of every backend macro (no trailing newline)."""
    out = []
    for isa in ISAS:
        if weight_bits in isa.weight_bits:
            out += [f"#if {isa.condition}", f"#define {isa.macro} 1", "#else", f"#define {isa.macro} 0", "#endif"]
        else:
            out.append(f"#define {isa.macro} 0")
    return "\n".join(out)


def _part(env: jinja2.Environment, folder: str, op: str, part: str, ctx: dict) -> str | None:
    """The text of macro ``part`` of templates/kernels/<folder>/<op>.h.j2, or None if there is no such part."""
    try:
        module = env.get_template(f"kernels/{folder}/{op}.h.j2").make_module(ctx)
    except jinja2.TemplateNotFound:
        return None
    macro = getattr(module, part, None)
    if macro is None:
        return None
    text = str(macro())
    return text[:-1] if text.endswith("\n") else text


@jinja2.pass_context
def select(context, op: str, part: str, tier: str | None = None) -> str:
    """The preprocessor selection of ``part`` of kernel ``op`` over the backends (no trailing newline)."""
    env, ctx = context.environment, context.get_all()
    variants = []
    for isa in ISAS:
        macro = isa.tiers.get(tier, isa.macro) if tier else isa.macro
        text = _part(env, isa.name, op, part, ctx) if macro else None
        if text is not None:
            variants.append((macro, text))
    portable = _part(env, PORTABLE, op, part, ctx)
    if not variants:
        if portable is None:
            raise jinja2.TemplateError(f"kernel part {op}.{part} has no variant in any backend")
        return portable
    if all(text == "" for _, text in variants):  # a portable-only piece: nothing on these backends
        return "\n".join([f"#if {' && '.join('!' + m for m, _ in variants)}", portable or "", "#endif"])
    out = []
    for i, (macro, text) in enumerate(variants):
        out.append(f"#{'if' if i == 0 else 'elif'} {macro}")
        if text:
            out.append(text)
    if portable is not None:
        out += ["#else", portable] if portable else ["#else"]
    out.append("#endif")
    return "\n".join(out)


def install(env: jinja2.Environment) -> None:
    """Make ``isa_select`` and ``isa_defines`` callable from the templates."""
    env.globals["isa_select"] = select
    env.globals["isa_defines"] = defines
