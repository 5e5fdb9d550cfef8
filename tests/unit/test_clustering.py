"""Semantic clustering: the greedy algorithm, the real MiniLM embedding clusterer, NLI logic."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

from uaclm_dist.evaluate.clustering import (  # noqa: E402
    Clusterer,
    EmbeddingClusterer,
    NLIClusterer,
    assign_clusters,
    build_clusterer,
    entailment_index,
    greedy_clusters,
    merge_identical,
)
from uaclm_dist.evaluate.scores import discrete_semantic_entropy  # noqa: E402
from uaclm_dist.evaluate.stats import ExampleStats  # noqa: E402

Q = "What is the capital of France?"


def test_merge_identical_normalizes_case_whitespace_punctuation():
    reps, group = merge_identical(["Paris", " paris. ", "PARIS!", "The Paris", "London"])
    assert reps == ["Paris", "London"]
    assert group == [0, 0, 0, 0, 1]


def test_greedy_clusters_compare_against_first_members():
    # "same" iff the numbers differ by <= 1: 0~1, 2 is not ~0 (first member) though 2~1
    def matches(i, firsts):
        hits = [k for k, f in enumerate(firsts) if abs(i - f) <= 1]
        return hits[0] if hits else None

    assert greedy_clusters(4, matches) == [0, 0, 1, 1]
    assert greedy_clusters(0, matches) == []


# ------------------------------------------------------------------------------------- embedding


@pytest.fixture(scope="module")
def embedder():
    clusterer = EmbeddingClusterer(threshold=0.85, device="cpu")
    assert isinstance(clusterer, Clusterer)
    return clusterer


def test_embedding_clusterer_paraphrases_join_different_answers_do_not(embedder):
    # cosines seen with the packaged all-MiniLM-L6-v2: Paris~"It is Paris" 0.867,
    # Paris~"Paris, France" 0.934, Paris~London 0.579
    assert embedder.cluster(Q, ["Paris", "It is Paris", "London", "Paris, France"]) == [0, 0, 1, 0]
    # 1945~"In 1945" 0.937, 1945~"in the year 1945" 0.915, 1945~1918 0.642
    assert embedder.cluster("When did WW2 end?", ["1945", "In 1945", "1918", "in the year 1945"]) \
        == [0, 0, 1, 0]
    # Shakespeare~"William Shakespeare" 0.897, ~"Charles Dickens" 0.432
    assert embedder.cluster("Who wrote Hamlet?", ["Charles Dickens", "Shakespeare",
                                                  "William Shakespeare"]) == [0, 1, 1]


def test_embedding_cosines_match_the_documented_values(embedder):
    emb = embedder.embed(["Paris", "It is Paris", "London", "The capital is Paris."])
    sim = emb @ emb.T
    assert sim[0, 1] == pytest.approx(0.867, abs=0.01)
    assert sim[0, 2] == pytest.approx(0.579, abs=0.01)
    assert sim[0, 3] == pytest.approx(0.776, abs=0.01)  # a paraphrase MiniLM keeps apart at 0.85


def test_embedding_clusterer_trivial_cases_and_batch(embedder):
    assert embedder.cluster(Q, []) == []
    assert embedder.cluster(Q, ["Paris", "paris!", " PARIS "]) == [0, 0, 0]  # no model call
    batch = embedder.cluster_batch([Q, Q, Q], [["Rome"], ["Paris", "London"], ["a", "A."]])
    assert batch == [[0], [0, 1], [0, 0]]
    assert EmbeddingClusterer(threshold=0.0, device="cpu").cluster(Q, ["Paris", "Rome"]) == [0, 0]


def test_assign_clusters_feeds_semantic_entropy(embedder):
    stats = ExampleStats(
        id="x", question=Q, references=["Paris"], greedy_text="Paris",
        greedy_token_logprobs=[-0.1], greedy_token_entropies=[0.3],
        sample_texts=["Paris", "It is Paris", "London", "Berlin"],
        sample_token_logprobs=[[-0.1], [-0.2], [-1.0], [-2.0]],
    )
    out = assign_clusters(stats, embedder)
    assert out.cluster_ids == [0, 0, 1, 2] and stats.cluster_ids is None
    assert discrete_semantic_entropy(out) > 0


# ------------------------------------------------------------------------------------------- NLI


def test_entailment_index_from_id2label():
    assert entailment_index({0: "CONTRADICTION", 1: "NEUTRAL", 2: "ENTAILMENT"}) == 2
    assert entailment_index({"0": "not_entailment", "1": "entailment"}) == 1
    assert entailment_index({0: "entails", 1: "other"}) == 0
    with pytest.raises(ValueError, match="no 'entailment'"):
        entailment_index({0: "LABEL_0", 1: "LABEL_1"})


def test_nli_clusterer_bidirectional_with_question_prepended():
    seen = []

    def entails(pairs):
        seen.extend(pairs)
        # "Paris" entails "It is Paris" and back; "Paris, France" entails "Paris" only one way
        same = {("Paris", "It is Paris"), ("It is Paris", "Paris"), ("Paris, France", "Paris")}
        return [(p.removeprefix(Q + " "), h.removeprefix(Q + " ")) in same for p, h in pairs]

    nli = NLIClusterer(entails=entails)
    assert nli.cluster(Q, ["Paris", "It is Paris", "Paris, France", "paris"]) == [0, 0, 1, 0]
    assert all(p.startswith(Q + " ") and h.startswith(Q + " ") for p, h in seen)
    assert (f"{Q} Paris", f"{Q} It is Paris") in seen and (f"{Q} It is Paris", f"{Q} Paris") in seen
    assert not any("paris" in p.split("? ")[1] for p, _ in seen)  # the duplicate never reaches NLI


def test_nli_clusterer_arguments():
    with pytest.raises(ValueError, match="exactly one"):
        NLIClusterer()
    with pytest.raises(FileNotFoundError, match="local directory"):
        NLIClusterer("/nonexistent/nli-model")


@pytest.fixture(scope="module")
def tiny_nli_dir(tmp_path_factory):
    """A random-init 1-layer BERT NLI classifier + the MiniLM (BERT) tokenizer, saved locally."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from uaclm_dist.modeling.assets import minilm_path

    path = tmp_path_factory.mktemp("tiny_nli")
    tok = AutoTokenizer.from_pretrained(str(minilm_path()), local_files_only=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=128, num_labels=3,
        id2label={0: "contradiction", 1: "neutral", 2: "entailment"},
        label2id={"contradiction": 0, "neutral": 1, "entailment": 2},
    )
    model = BertForSequenceClassification(config)
    tok.save_pretrained(path)
    model.save_pretrained(path)
    return path, model


@pytest.mark.parametrize(("winner", "expected"), [(2, [0, 0, 0, 0]), (0, [0, 1, 2, 0])])
def test_nli_clusterer_runs_a_real_local_model(tiny_nli_dir, tmp_path, winner, expected):
    """A bias on one class decides every prediction: entailment -> one cluster; contradiction
    -> every distinct answer alone (normalized duplicates still merge)."""
    import torch

    src, model = tiny_nli_dir
    with torch.no_grad():
        model.classifier.bias.zero_()
        model.classifier.bias[winner] = 100.0
    model.save_pretrained(tmp_path)
    for name in os.listdir(src):
        if not (tmp_path / name).exists():
            (tmp_path / name).symlink_to(src / name)
    nli = NLIClusterer(tmp_path, device="cpu", batch_size=3)
    assert nli.cluster(Q, ["Paris", "London", "Rome", "paris."]) == expected


def test_build_clusterer_reads_the_typed_eval_section(tmp_path):
    from uaclm_dist.config import EvalConfig

    embedding = build_clusterer(EvalConfig(similarity_threshold=0.7))
    assert isinstance(embedding, EmbeddingClusterer) and embedding.threshold == 0.7
    with pytest.raises(FileNotFoundError, match="eval.nli_model_path"):
        build_clusterer(EvalConfig(clusterer="nli", nli_model_path=str(tmp_path / "none")))
