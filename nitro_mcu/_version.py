"""The package version, in one place: the package, the generated C and pyproject.toml read it here."""
__version__ = "0.1.0"
