"""Model families: the registry, :func:`load_model`, and the built-in ``causal_lm``.

How to add one: a module with a :class:`ModelFamily` subclass (``name``, ``load``,
``load_tokenizer``; override ``attach_lora`` / ``load_adapter`` where the family differs) and
``FAMILIES.register(MyFamily())``; select it with ``model.family: <name>``. A family that takes
images also returns an :class:`~uaclm_dist.modeling.images.ImageSpec` from ``image_spec``
(``vision_lm`` does).
"""

from uaclm_dist.modeling.families import (
    causal_lm,  # noqa: F401 (registers causal_lm)
    vision_lm,  # noqa: F401 (registers vision_lm)
)
from uaclm_dist.modeling.families.base import (
    FAMILIES,
    LoadedModel,
    ModelFamily,
    family_of,
    load_model,
    load_tokenizer_for,
)

__all__ = ["FAMILIES", "LoadedModel", "ModelFamily", "family_of", "load_model",
           "load_tokenizer_for"]  # fmt: skip
