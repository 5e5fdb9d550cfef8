"""``ult``: token-level unlikelihood training (Welleck et al. 2020), a baseline in the paper.

Its negative candidates are earlier targets of the sequence, so it needs the full distribution:
it runs on dense logits only (``objective.implementation: reference``).
"""

from __future__ import annotations

from uaclm_dist.losses.objectives.base import IGNORE_INDEX, OBJECTIVES, Objective


class Unlikelihood(Objective):
    name = "ult"
    needs_full_vocab = True
    summary = "token-level unlikelihood (baseline; dense logits only)"

    def dense(self, logits, labels, *, step=0, total_steps=1, ignore_index=IGNORE_INDEX):
        from uaclm_dist.losses import reference as R

        return R.unlikelihood_loss(logits, labels, alpha=self.config.ult_alpha,
                                   ignore_index=ignore_index)  # fmt: skip


OBJECTIVES.register(Unlikelihood)
