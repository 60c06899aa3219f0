"""The generator wing: a trained model -> a typed plan (ops, bounds, static memory) -> C via Jinja2 templates,
and a host-compiled wrapper of that C for Python (docs/codegen.md)."""
from .generator import CodegenError, Converted, convert, fp32_backprop_bytes, plan, template_dir

__all__ = ["CodegenError", "Converted", "convert", "fp32_backprop_bytes", "plan", "template_dir"]
