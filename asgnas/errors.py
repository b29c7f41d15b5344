"""One error type for everything a user can get wrong: it prints as a single line naming what applies."""

from __future__ import annotations


class AsgnasError(Exception):
    """A user-facing error: bad model, unknown pass, wrong option, unsupported construct.

    The CLI prints ``str(err)`` as one line and exits with status 2; no traceback.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        pass_name: str | None = None,
        node: str | None = None,
        op: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.pass_name = pass_name
        self.node = node
        self.op = op
        super().__init__(message)

    def with_context(self, **context: str | None) -> "AsgnasError":
        """Fill in context fields that are still unset (callers higher up know the file or pass)."""
        for key, value in context.items():
            if getattr(self, key) is None and value is not None:
                setattr(self, key, value)
        return self

    def __str__(self) -> str:
        where = [
            f"{label} {value}"
            for label, value in (
                ("file", self.file),
                ("pass", self.pass_name),
                ("node", self.node),
                ("op", self.op),
            )
            if value
        ]
        prefix = ", ".join(where)
        return f"{prefix}: {self.message}" if prefix else self.message


class ResultRejected(AsgnasError):
    """The input was fine but the result must not be used (verify's mismatch, a diverged training): the CLI
    prints one line, still writes the report, writes no model, and exits with status 1."""


class AsgnasWarning(UserWarning):
    """Something the user should know that does not stop the job (e.g. an input the ONNX checker rejects).

    The CLI prints it as one line on stderr."""
