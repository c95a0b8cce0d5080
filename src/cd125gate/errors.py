"""Errors that describe bad input. They reach the user as one line, never a traceback."""

from __future__ import annotations


class InputError(Exception):
    """Bad input: an unreadable file, a missing channel, a wrong matrix, a bad sample sheet.

    The message must name the file (or sample) and the problem, in one line.
    """

    def __init__(self, source: object, problem: object) -> None:
        self.source = one_line(source)
        self.problem = one_line(problem)
        super().__init__(f"{self.source}: {self.problem}")


def one_line(text: object) -> str:
    """``text`` with line breaks and other control characters escaped.

    A channel name or keyword value quoted in a message may hold a newline;
    the message must still be one line (``cd125gate: FILE: problem``).
    """
    text = str(text)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)
