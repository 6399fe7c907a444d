"""The one exception users see. The CLI prints it as a single line and exits 2."""


class CpbenchError(Exception):
    """Bad input or an unusable file: the message names the problem in one line."""

    def __init__(self, message: str):
        # Keep the message on one line whatever the caller passed in (pydantic errors are multi-line).
        super().__init__(" ".join(str(message).split()))
