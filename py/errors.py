"""Errors the pack raises for bad input, before sampling starts."""


class PriorSwapError(ValueError):
    """A bad combination of inputs, with a message that names the fix.

    ComfyUI shows the message in the node's error popup, so it is written for the artist.
    """
