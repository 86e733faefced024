"""The one exception type the CLI shows to users as a single line, without a traceback."""


class MedtuneError(Exception):
    """An error the user can act on: bad input, a bad config, a missing file.

    The message must be one line, name the file or key at fault, and never contain patient data.
    """
