"""Errors that describe bad input. They reach the user as one line, never a traceback."""


class InputError(Exception):
    """Bad input: an unreadable file, a missing channel, a wrong matrix, a bad sample sheet.

    The message must name the file (or sample) and the problem, in one line.
    """

    def __init__(self, source, problem):
        self.source = str(source)
        self.problem = str(problem)
        super().__init__(f"{self.source}: {self.problem}")
