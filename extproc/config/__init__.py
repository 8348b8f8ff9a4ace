"""Configuration: the proto schema (v1), the YAML loader and the compiled runtime."""

from extproc.config.loader import ConfigError, load_data, load_file, load_text
from extproc.config.runtime import Runtime

__all__ = ["ConfigError", "Runtime", "load_data", "load_file", "load_text"]
