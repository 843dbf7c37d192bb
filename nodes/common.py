"""What the node modules share: the category and the PRIOR socket type in the V3 schema."""
from __future__ import annotations

from comfy_api.latest import io

from ..py.prior import PRIOR_TYPE

CATEGORY = "sampling/prior_swap"

# A custom socket type: the V3 counterpart of V1's bare "PRIOR" string (same io_type on the wire).
Prior = io.Custom(PRIOR_TYPE)


def choice(name: str, value, options) -> bool | str:
    """For a node's ``validate_inputs``: ComfyUI 0.3.75 checks a V1 combo's value against its list before the
    prompt runs, but not a V3 combo's ("COMBO" with its options); this refuses what V1 refused.

    Declare only the combo inputs in ``validate_inputs``: ComfyUI skips its own min/max checks for the inputs
    that function takes. A linked input has no value at validation (None here): it is not checked, as in V1."""
    options = list(options)
    if value is None or value in options:
        return True
    return f"{name}: {value!r} is not one of {', '.join(map(str, options))}"
