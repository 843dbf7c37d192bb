"""Node classes of the pack: they declare inputs and call into ``py/``."""
from .prior_nodes import NODE_CLASS_MAPPINGS as _PRIOR, NODE_DISPLAY_NAME_MAPPINGS as _PRIOR_NAMES
from .guidance_nodes import NODE_CLASS_MAPPINGS as _GUIDANCE, NODE_DISPLAY_NAME_MAPPINGS as _GUIDANCE_NAMES

NODE_CLASS_MAPPINGS = {**_PRIOR, **_GUIDANCE}
NODE_DISPLAY_NAME_MAPPINGS = {**_PRIOR_NAMES, **_GUIDANCE_NAMES}
