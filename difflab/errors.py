"""The one exception type a user sees: a one-line message that says what to do."""


class DifflabError(Exception):
    """A user-facing error (bad option, bad data, bad checkpoint).

    The CLI prints ``error: <message>`` on one line and exits with status 2; it never shows a traceback
    for this type. The message must name the offending thing (option, file) and say how to fix it.
    """


def one_line(error: BaseException) -> str:
    """``error`` as "Type: message" on one line, to quote inside a DifflabError message."""
    return " ".join(f"{type(error).__name__}: {error}".split())


class Interrupted(Exception):
    """The user pressed Ctrl-C; the message says what was kept and how to go on. The CLI prints it on a line
    of its own and exits with status 130."""
