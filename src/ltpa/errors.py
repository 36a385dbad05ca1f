"""The errors the package raises: ``LtpaError`` and, for the kinds a caller handles
differently, its subclasses. Every one says what and where (scan, field, file)."""

import contextlib


class LtpaError(Exception):
    """A problem with the user's input, with enough context to fix it.

    The message names the offending scan, field and/or file and what was
    expected; the command line and the workflow print it as is. Readers name the
    file; the job runner (``ltpa.jobs.pipeline.run``) adds the scan and the field once,
    with ``in_context``.
    """

    def in_context(self, prefix: str) -> "LtpaError":
        """The same error with ``prefix: `` in front (once).

        Parameters
        ----------
        prefix : str
            Context to put in front of the message, e.g. the scan and the field. Empty: no
            change.

        Returns
        -------
        LtpaError
            ``self`` when ``prefix`` is empty or the message already starts with it; otherwise
            a new error of the same class whose message is ``"<prefix>: <message>"``, with the
            same ``__cause__``.
        """
        text = str(self)
        if not prefix or text.startswith(prefix):
            return self
        err = type(self)(f"{prefix}: {text}")
        err.__cause__ = self.__cause__
        return err


class InputError(LtpaError):
    """The user's input is wrong: a missing file, a bad value in local_data.json or the config,
    a region list or label table that cannot be used, a query that makes no sense."""


class GeometryError(LtpaError):
    """Files that must share a grid do not: a header against its declared space, an atlas or
    mask against the streamlines' grid, a mapping against its volume."""


class DamagedFileError(LtpaError):
    """A file that cannot be what it claims: truncated, corrupt, or contradicting its own
    header."""


class RefusedPickleError(DamagedFileError):
    """The safe loader refused a pkl: an opcode, a name or a state a track dataset never has."""


class StaleOutputError(LtpaError):
    """Outputs that disagree with their inputs or each other (an npy and its pkl), or an input
    that changed while a job read it: run the workflow again."""


@contextlib.contextmanager
def opening(path, kind: str):
    """Turn the OSError of opening the input ``path`` into an LtpaError naming the file: it
    does not exist, is a folder (not ``kind``, e.g. "a .trk"), or could not be opened.

    A context manager: wrap the code that opens ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        The input file being opened; named in the message.
    kind : str
        What the file should be, with its article, e.g. "a .trk"; used when it is a folder.

    Yields
    ------
    None
        Control to the body of the ``with`` block.

    Raises
    ------
    InputError
        When the body raises ``FileNotFoundError`` (the file does not exist),
        ``IsADirectoryError`` (it is a folder) or any other ``OSError`` (it could not be
        opened; the message gives the system's reason). The original exception is not chained.
    """
    try:
        yield
    except FileNotFoundError:
        raise InputError(f"file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"file {str(path)!r} is a folder, not {kind}") from None
    except OSError as exc:
        raise InputError(f"file {str(path)!r} could not be opened: {exc.strerror}") from None
