"""The one error type the package raises for bad input: it always says what and where."""


class LtpaError(Exception):
    """A problem with the user's input, with enough context to fix it.

    The message names the offending scan, field and/or file and what was
    expected; the command line and the workflow scripts print it as is.
    """


def where(scan_id=None, field=None, path=None):
    """Format the 'which scan, which field, which file' prefix of a message."""
    parts = []
    if scan_id is not None:
        parts.append(f"scan {scan_id!r}")
    if field is not None:
        parts.append(f"field {field!r}")
    if path is not None:
        parts.append(f"file {str(path)!r}")
    return ", ".join(parts)
