"""``clm``: causal-LM cross-entropy, the mean of -log p(label) over supervised tokens."""

from __future__ import annotations

from uaclm_dist.losses.objectives.base import IGNORE_INDEX, OBJECTIVES, Objective


class Clm(Objective):
    name = "clm"
    summary = "cross-entropy (the standard fine-tuning baseline)"
    # Its loss is -log p_y; its diagnostics need log p_y and the argmax (token accuracy). The
    # entropy of the model's predictions during a clm run is what the entropy probe measures.
    uses_entropy = False

    def from_stats(self, stats, *, step, total_steps, sequence_ids=None):
        from uaclm_dist.losses.types import loss_output, masked_mean

        clm = masked_mean(-stats.log_prob_label, stats.valid)
        return loss_output(self.graph_anchor(stats) + clm, stats, {"clm": clm})

    def gradient_directions(self, stats):
        """The mean of -log p_y: every token's gradient is along (-1, 0, 0)."""
        import torch

        like = stats.log_prob_label
        d = torch.zeros(like.shape[0], 1, 3, dtype=like.dtype, device=like.device)
        d[:, 0, 0] = -1.0
        return d

    def dense(self, logits, labels, *, step=0, total_steps=1, ignore_index=IGNORE_INDEX):
        from uaclm_dist.losses import reference as R

        out = R.clm_loss(logits, labels, ignore_index=ignore_index)
        out.entropy_correct = out.entropy_incorrect = None  # as the fused kernel: not computed
        return out


OBJECTIVES.register(Clm)
