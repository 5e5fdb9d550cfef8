"""``clm``: causal-LM cross-entropy, the mean of -log p(label) over supervised tokens."""

from __future__ import annotations

from uaclm_dist.losses.objectives.base import IGNORE_INDEX, OBJECTIVES, Objective


class Clm(Objective):
    name = "clm"
    summary = "cross-entropy (the standard fine-tuning baseline)"

    def from_stats(self, stats, *, step, total_steps, sequence_ids=None):
        from uaclm_dist.losses.types import loss_output, masked_mean

        clm = masked_mean(-stats.log_prob_label, stats.valid)
        return loss_output(self.graph_anchor(stats) + clm, stats, {"clm": clm})

    def dense(self, logits, labels, *, step=0, total_steps=1, ignore_index=IGNORE_INDEX):
        from uaclm_dist.losses import reference as R

        return R.clm_loss(logits, labels, ignore_index=ignore_index)


OBJECTIVES.register(Clm)
