"""data.max_train_examples: a smaller training set from the same split, so that runs of
different data sizes are evaluated on the same test questions."""

from __future__ import annotations

from uaclm_dist.config import REPO_ROOT, load_config
from uaclm_dist.train.trainer import prepare_training_data

CONFIG = REPO_ROOT / "configs" / "tiny_test.yaml"


def test_fewer_training_questions_keep_the_test_split():
    full = prepare_training_data(load_config(CONFIG, ["data.max_examples=null"]))
    small = prepare_training_data(load_config(CONFIG, ["data.max_examples=null",
                                                       "data.max_train_examples=20"]))
    assert len(full.train_ids) > 20 and small.train_ids == full.train_ids[:20]
    assert small.test_ids == full.test_ids
    assert len(small.train) == 20 and small.report["train_records"] == 20
