"""Training objectives: the registry and the built-ins (clm, ua_clm, clm+ua, ult).

    from uaclm_dist.losses.objectives import OBJECTIVES, build_objective
    objective = build_objective(cfg.objective)          # an Objective instance
    out = objective.from_stats(stats, step=s, total_steps=n)

How to add one: write a module with an :class:`Objective` subclass (``name``, ``from_stats``
and/or ``dense``, optionally ``weight``) and call ``OBJECTIVES.register(MyObjective)`` in it;
import the module before the config is loaded (built-ins are imported here).
"""

from uaclm_dist.losses.objectives import clm, clm_plus_ua, ua_clm, ult  # noqa: F401 (register)
from uaclm_dist.losses.objectives.base import OBJECTIVES, Objective, build_objective

__all__ = ["OBJECTIVES", "Objective", "build_objective"]
