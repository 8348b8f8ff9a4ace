"""What every part of the loader shares: the config, where its files are, and the problems
found so far (each with its field path, so a part can tell whether another failed)."""

from __future__ import annotations

from pathlib import Path

from extproc.config.v1 import config_pb2 as pb


class Context:
    def __init__(
        self, config: pb.Config, base_dir: Path, resolve_secrets: bool, start_files: bool
    ) -> None:
        self.config = config
        self.base_dir = base_dir
        # Credentials are read (not for render-envoy and check-config --skip-secrets).
        self.resolve_secrets = resolve_secrets
        # Files read only when the processes start are checked (not on a reload).
        self.start_files = start_files
        self.problems: list[str] = []
        self._paths: list[str] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")
        self._paths.append(path)

    def failed(self, path: str, ignoring: tuple[str, ...] = ()) -> bool:
        """Whether a problem was found at path or below it, except below the parts
        ignoring names (".credential": a backend stays usable for later checks)."""
        skipped = tuple(path + part for part in ignoring)
        return any(
            (p == path or (p.startswith(path) and p[len(path)] in ".["))
            and not (skipped and _within(p, skipped))
            for p in self._paths
        )

    def path_of(self, name: str) -> Path:
        path = Path(name)
        return path if path.is_absolute() else self.base_dir / path

    def check_file(self, path: str, name: str) -> str | None:
        """The absolute path of a file read at start, or None (a problem) when it does
        not exist (not checked without start_files)."""
        if self.start_files and not self.path_of(name).is_file():
            self.problem(path, f'file "{name}" does not exist')
            return None
        return str(self.path_of(name))


def _within(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == p or (path.startswith(p) and path[len(p)] in ".[") for p in prefixes)
