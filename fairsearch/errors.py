"""The one exception type for problems the user can fix (bad input, missing files)."""


class FairsearchError(Exception):
    """A user-facing problem: bad input, a missing file, a malformed space.

    The message is one line (or one line per problem) that names the file or key, the value found and
    what is allowed. The CLI prints it without a traceback and exits with status 2.
    """
