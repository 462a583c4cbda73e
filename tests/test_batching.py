"""Length bucketing under a padded-token budget, and the dedup key."""

from __future__ import annotations

from cache_builder.build.batching import content_hash, length_batches


def test_batches_respect_the_padded_budget_and_sort_by_length():
    lengths = [5, 30, 7, 12, 30, 2, 9, 100]
    items = list(range(len(lengths)))
    batches = length_batches(items, lengths, batch_tokens=40)
    assert sorted(i for b in batches for i in b) == items
    assert batches[0] == [7]  # longer than the budget: alone
    for batch in batches:
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 40
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(flat, reverse=True)
    assert length_batches(items, lengths, 40) == batches  # deterministic


def test_content_hash_counts_tokens_and_spans():
    key = content_hash(["a", "b"], [(0, 1), (2, 3)])
    assert len(key) == 16 and key == content_hash(["a", "b"], [(0, 1), (2, 3)])
    assert key != content_hash(["a", "b"], [(0, 1), (3, 4)])  # same tokens, other spacing
    assert key != content_hash(["ab"], [(0, 2)])
    assert content_hash(["a", "b"], [(0, 1), (1, 2)]) != content_hash(["a"], [(0, 1)])
