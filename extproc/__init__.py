"""extproc: an AI gateway built as Envoy and a Python ext_proc service."""

from extproc import compiled

compiled.install()
