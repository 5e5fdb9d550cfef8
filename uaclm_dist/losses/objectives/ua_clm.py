"""``ua_clm``: the paper's uncertainty-aware loss alone (Eq. 2), its objective for text LLMs."""

from __future__ import annotations

from uaclm_dist.losses.objectives.base import IGNORE_INDEX, OBJECTIVES, Objective


class UaClm(Objective):
    name = "ua_clm"
    summary = "the paper's uncertainty-aware loss alone (Eq. 2)"

    def ua_terms(self, stats, sequence_ids):
        """(incorrect term, correct term, their sum) with the configured pooling and eps."""
        from uaclm_dist.losses.objectives.ua_pooling import ua_terms_flat

        cfg = self.config
        incorrect, correct = ua_terms_flat(
            stats, pooling=cfg.ua_pooling, eps=cfg.ua_eps, sequence_ids=sequence_ids
        )
        return incorrect, correct, incorrect + correct

    def gradient_directions(self, stats):
        """A token's UA gradient is its own unnormalised term's gradient over 1/|C| or 1/|C~|
        (per sequence under ``sequence`` pooling): one direction per token."""
        from uaclm_dist.losses.objectives.ua_pooling import ua_token_directions

        return ua_token_directions(stats, self.config.ua_eps).unsqueeze(1)

    def from_stats(self, stats, *, step, total_steps, sequence_ids=None):
        from uaclm_dist.losses.types import loss_output

        incorrect, correct, ua = self.ua_terms(stats, sequence_ids)
        terms = {"ua": ua, "ua_incorrect": incorrect, "ua_correct": correct}
        return loss_output(self.graph_anchor(stats) + ua, stats, terms)

    def dense(self, logits, labels, *, step=0, total_steps=1, ignore_index=IGNORE_INDEX):
        from uaclm_dist.losses import reference as R

        cfg = self.config
        return R.ua_clm_loss(logits, labels, ignore_index=ignore_index, pooling=cfg.ua_pooling,
                             eps=cfg.ua_eps)  # fmt: skip


OBJECTIVES.register(UaClm)
