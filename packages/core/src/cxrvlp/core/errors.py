"""The library's own exceptions: each names the file, row or key that caused it."""

from __future__ import annotations


class CxrvlpError(Exception):
    """Base class of every error raised by cxrvlp on bad input."""


class DatasetNotFoundError(CxrvlpError, FileNotFoundError):
    """A dataset root or one of its expected files is missing."""

    def __init__(self, dataset: str, path: object, expected: str = "") -> None:
        self.dataset, self.path, self.expected = dataset, path, expected
        msg = f"{dataset}: expected {expected or 'a file'} at '{path}', but it does not exist"
        super().__init__(msg)


class MalformedRecordError(CxrvlpError, ValueError):
    """A row of a CSV/TXT/XML/JSON file cannot be parsed."""

    def __init__(self, file: object, row: object, reason: str) -> None:
        self.file, self.row, self.reason = file, row, reason
        super().__init__(f"{file}: row {row}: {reason}")


class CorruptImageError(CxrvlpError, ValueError):
    """An image file cannot be decoded."""

    def __init__(self, file: object, reason: str) -> None:
        self.file, self.reason = file, reason
        super().__init__(f"{file}: cannot decode image: {reason}")


class ConfigError(CxrvlpError, ValueError):
    """A config file or override has an unknown key or a value of the wrong type."""


class CheckpointError(CxrvlpError, RuntimeError):
    """A checkpoint cannot be read (truncated, corrupt, unsafe pickle)."""


class CheckpointMismatchError(CheckpointError):
    """A state dict does not match the model: lists every missing, unexpected and mis-shaped key."""

    def __init__(
        self,
        missing: list[str],
        unexpected: list[str],
        mismatched: list[tuple[str, tuple, tuple]],
        source: str = "state dict",
    ) -> None:
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched
        lines = [f"{source} does not match the model:"]
        lines += [f"  missing ({len(missing)}): {k}" for k in missing]
        lines += [f"  unexpected ({len(unexpected)}): {k}" for k in unexpected]
        lines += [f"  shape mismatch: {k}: checkpoint {a} vs model {b}" for k, a, b in mismatched]
        super().__init__("\n".join(lines))


class NonFiniteLossError(CxrvlpError, FloatingPointError):
    """A loss became NaN or Inf and the policy says stop."""
