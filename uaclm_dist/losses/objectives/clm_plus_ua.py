"""``clm+ua``: ``L_CLM + beta L_UA`` with the paper's step schedule for beta (its LLaVA recipe:
0.2 for the first 20% of steps, 0.8 after)."""

from __future__ import annotations

from uaclm_dist.losses.objectives.base import IGNORE_INDEX, OBJECTIVES
from uaclm_dist.losses.objectives.ua_clm import UaClm


class ClmPlusUa(UaClm):
    name = "clm+ua"
    summary = "cross-entropy + beta x the UA loss, beta on a step schedule"

    def weight(self, step, total_steps):
        from uaclm_dist.losses.reference import beta_schedule

        cfg = self.config
        return beta_schedule(
            step, total_steps, beta_start=cfg.beta_start, beta_end=cfg.beta_end,
            switch_fraction=cfg.beta_switch_fraction,
        )  # fmt: skip

    def gradient_directions(self, stats):
        """Two per token: cross-entropy's (-1, 0, 0) (scale 1/N) and the UA direction (scale
        beta/|C| or beta/|C~|), whose ratio is known only for the whole batch."""
        import torch

        from uaclm_dist.losses.objectives.ua_pooling import ua_token_directions

        ua = ua_token_directions(stats, self.config.ua_eps)
        clm = torch.zeros_like(ua)
        clm[:, 0] = -1.0
        return torch.stack([clm, ua], dim=1)

    def from_stats(self, stats, *, step, total_steps, sequence_ids=None):
        from uaclm_dist.losses.types import loss_output, masked_mean

        clm = masked_mean(-stats.log_prob_label, stats.valid)
        incorrect, correct, ua = self.ua_terms(stats, sequence_ids)
        loss = self.graph_anchor(stats) + clm + self.weight(step, total_steps) * ua
        terms = {"clm": clm, "ua": ua, "ua_incorrect": incorrect, "ua_correct": correct}
        return loss_output(loss, stats, terms)

    def dense(self, logits, labels, *, step=0, total_steps=1, ignore_index=IGNORE_INDEX):
        from uaclm_dist.losses import reference as R

        cfg = self.config
        return R.clm_plus_ua_loss(logits, labels, beta=self.weight(step, total_steps),
                                  ignore_index=ignore_index, pooling=cfg.ua_pooling,
                                  eps=cfg.ua_eps)  # fmt: skip


OBJECTIVES.register(ClmPlusUa)
