"""One exception type for every user-facing error, so the CLI can print it as one line."""


class VitCompressError(ValueError):
    """A problem with the user's input, stated as `what is wrong; how to fix it` on one line."""
