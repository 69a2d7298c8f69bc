"""The one base class of user errors.

A user error is bad input - a missing or corrupt file, an unknown model, an invalid value - whose
message names the file, sample or key. ``mmneuron`` prints such an error as one line, prefixed by
the command, and exits non-zero; any other exception is a programming error and keeps its traceback.
"""


class MmneuronError(Exception):
    """Bad input to a stage; the message names the file, sample or key."""
