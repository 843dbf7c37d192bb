"""What the node modules share: the category and the PRIOR socket type in the V3 schema."""
from __future__ import annotations

from comfy_api.latest import io

from ..py.prior import PRIOR_TYPE

CATEGORY = "sampling/prior_swap"

# A custom socket type: the V3 counterpart of V1's bare "PRIOR" string (same io_type on the wire).
Prior = io.Custom(PRIOR_TYPE)
