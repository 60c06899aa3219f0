"""Data files bundled with nitro_mcu (read with importlib.resources; see ATTRIBUTION.md)."""
