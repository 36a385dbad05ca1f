"""The one error type the package raises for bad input: it always says what and where."""

import contextlib


class LtpaError(Exception):
    """A problem with the user's input, with enough context to fix it.

    The message names the offending scan, field and/or file and what was
    expected; the command line and the workflow print it as is. Readers name the
    file; the job runner (``ltpa.pipeline.run``) adds the scan and the field once,
    with ``in_context``.
    """

    def in_context(self, prefix: str) -> "LtpaError":
        """The same error with ``prefix: `` in front (once)."""
        text = str(self)
        if not prefix or text.startswith(prefix):
            return self
        err = LtpaError(f"{prefix}: {text}")
        err.__cause__ = self.__cause__
        return err


@contextlib.contextmanager
def opening(path, kind: str):
    """Turn the OSError of opening the input ``path`` into an LtpaError naming the file: it
    does not exist, is a folder (not ``kind``, e.g. "a .trk"), or could not be opened."""
    try:
        yield
    except FileNotFoundError:
        raise LtpaError(f"file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise LtpaError(f"file {str(path)!r} is a folder, not {kind}") from None
    except OSError as exc:
        raise LtpaError(f"file {str(path)!r} could not be opened: {exc.strerror}") from None
