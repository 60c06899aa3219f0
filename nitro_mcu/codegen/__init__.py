"""The generator wing: a trained model -> a typed plan (ops.py: records; memory.py: the arena; walk.py: the
walk over the stages; plan.py: build and check) -> C via Jinja2 templates (render.py), the costs read off the
plan (cost.py); see docs/codegen.md.  The host-compiled wrapper of that C for Python is in the device wing
(nitro_mcu/device/compiled.py)."""
from .cost import fp32_backprop_bytes, op_macs, tensor_macs
from .ops import Plan
from .plan import CodegenError, plan
from .render import Converted, convert, template_dir

__all__ = ["CodegenError", "Converted", "Plan", "convert", "fp32_backprop_bytes", "op_macs", "plan", "tensor_macs",
           "template_dir"]
