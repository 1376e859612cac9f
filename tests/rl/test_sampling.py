from __future__ import annotations

from collections import Counter

import pytest
from conftest import fake_episode
from hypothesis import given, settings
from hypothesis import strategies as st

from ript_robot.config import RIPTConfig
from ript_robot.rl.advantage import is_informative
from ript_robot.rl.sampling import ContextPool, GroupSampler, collect_groups, groups_left
from ript_robot.types import Context

K = 4
# Predetermined rewards of the K rollouts of each context.
REWARDS: dict[str, list[float | None]] = {
    "mixed_a": [1.0, 0.0, 0.0, 1.0],
    "mixed_b": [0.0, 0.0, 0.0, 1.0],
    "all_success": [1.0, 1.0, 1.0, 1.0],
    "all_failure": [0.0, 0.0, 0.0, 0.0],
    "unlabeled": [None, None, None, None],
    "one_label": [1.0, None, None, None],
    "partly_labeled_mixed": [1.0, None, 0.0, None],
}


def ctx(name: str) -> Context:
    return Context(context_id=name, instruction="pick up the red block", seed=0)


class FakeRollout:
    """Returns real Episodes whose labels follow REWARDS; records every context it was given."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, contexts: list[Context]) -> list:
        self.calls.append([c.context_id for c in contexts])
        episodes = []
        seen: Counter[str] = Counter()
        for c in contexts:
            episodes.append(fake_episode(c, REWARDS[c.context_id][seen[c.context_id] % K]))
            seen[c.context_id] += 1
        return episodes

    def groups_seen(self) -> Counter[str]:
        flat = [cid for call in self.calls for cid in call]
        return Counter({cid: n // K for cid, n in Counter(flat).items()})


def test_mixed_groups_accepted_uniform_rejected_and_replaced():
    rollout = FakeRollout()
    pool = ContextPool([ctx(n) for n in ("mixed_a", "mixed_b", "all_success", "all_failure")], seed=3)
    groups, stats = collect_groups(GroupSampler(pool, 2, max_rounds=4), rollout, K)
    assert {g.context.context_id for g in groups} == {"mixed_a", "mixed_b"}
    assert all(is_informative(g.rewards) and len(g.episodes) == K for g in groups)
    seen = rollout.groups_seen()
    assert stats.accepted == 2
    assert stats.rejected_all_success == seen["all_success"]
    assert stats.rejected_all_failure == seen["all_failure"]
    assert stats.rejected_unlabeled == 0
    assert stats.rounds == len(rollout.calls)
    assert len(stats.episodes) == K * sum(seen.values())
    # each round asks only for the groups still missing
    assert len(rollout.calls[0]) == 2 * K


def test_uniform_group_is_replaced_by_another_context():
    replaced = 0
    for seed in range(10):
        rollout = FakeRollout()
        pool = ContextPool([ctx(n) for n in ("mixed_a", "all_success", "all_failure", "unlabeled")], seed=seed)
        groups, stats = collect_groups(GroupSampler(pool, 1, max_rounds=4), rollout, K)
        # one pass over the pool reaches the only informative context within max_rounds
        assert [g.context.context_id for g in groups] == ["mixed_a"]
        assert stats.rounds == stats.rejected + 1
        assert rollout.calls[-1] == ["mixed_a"] * K
        replaced += stats.rounds > 1
    assert replaced > 0


def test_every_group_uniform_terminates_after_max_rounds():
    rollout = FakeRollout()
    pool = ContextPool([ctx("all_success"), ctx("all_failure")], seed=0)
    groups, stats = collect_groups(GroupSampler(pool, 2, max_rounds=3), rollout, K)
    assert groups == []
    assert stats.accepted == 0
    assert stats.rounds == 3
    # two contexts per round, each round is a full pass over the pool
    assert stats.rejected_all_success == 3
    assert stats.rejected_all_failure == 3
    assert stats.rejected_unlabeled == 0
    assert stats.rejected == 6
    assert len(stats.episodes) == 6 * K


def test_without_dynamic_sampling_all_groups_are_kept_in_one_round():
    rollout = FakeRollout()
    names = ["mixed_a", "all_success", "all_failure", "unlabeled"]
    pool = ContextPool([ctx(n) for n in names], seed=0)
    groups, stats = collect_groups(GroupSampler(pool, 4, dynamic_sampling=False, max_rounds=4), rollout, K)
    assert stats.rounds == 1
    assert len(rollout.calls) == 1
    assert sorted(g.context.context_id for g in groups) == sorted(names)
    assert stats.accepted == 4
    assert stats.rejected == 0
    assert len(stats.episodes) == 4 * K


def test_unlabeled_groups_counted_as_rejected_unlabeled():
    rollout = FakeRollout()
    pool = ContextPool([ctx("unlabeled"), ctx("one_label"), ctx("partly_labeled_mixed")], seed=0)
    groups, stats = collect_groups(GroupSampler(pool, 3, max_rounds=1), rollout, K)
    assert [g.context.context_id for g in groups] == ["partly_labeled_mixed"]
    assert stats.rejected_unlabeled == 2
    assert stats.rejected_all_success == 0
    assert stats.rejected_all_failure == 0


def test_rollout_returning_wrong_number_of_episodes_raises():
    pool = ContextPool([ctx("mixed_a")])
    with pytest.raises(RuntimeError, match="returned 1 episodes"):
        collect_groups(GroupSampler(pool, 1), lambda cs: [fake_episode(cs[0], 1.0)], K)


@pytest.mark.parametrize(("k", "rounds"), [(1, 4), (4, 0)])
def test_collect_groups_rejects_bad_arguments(k, rounds):
    with pytest.raises(ValueError):
        collect_groups(GroupSampler(ContextPool([ctx("mixed_a")]), 1, max_rounds=rounds), FakeRollout(), k)


def test_context_pool_visits_every_context_before_repeating():
    contexts = [ctx(f"c{i}") for i in range(5)]
    pool = ContextPool(contexts, seed=1)
    assert len(pool) == 5
    taken = [c.context_id for c in pool.take(2) + pool.take(3)]
    assert sorted(taken) == sorted(c.context_id for c in contexts)
    two_passes = [c.context_id for c in pool.take(10)]
    assert sorted(two_passes[:5]) == sorted(c.context_id for c in contexts)
    assert sorted(two_passes[5:]) == sorted(c.context_id for c in contexts)


def test_context_pool_order_is_seeded():
    contexts = [ctx(f"c{i}") for i in range(8)]
    a = [c.context_id for c in ContextPool(contexts, seed=7).take(16)]
    b = [c.context_id for c in ContextPool(contexts, seed=7).take(16)]
    assert a == b


def test_context_pool_rejects_empty_and_duplicates():
    with pytest.raises(ValueError, match="empty"):
        ContextPool([])
    with pytest.raises(ValueError, match="unique"):
        ContextPool([ctx("a"), ctx("b"), ctx("a")])


def test_informative_selection_rolls_out_contexts_that_came_back_mixed_more_and_never_abandons_the_others():
    names = ["mixed_a", "mixed_b", "all_success", "all_failure"] * 4  # 16 contexts, 8 of them uniform
    contexts = [Context(f"{n}/{i}", "pick up the red block", i) for i, n in enumerate(names)]
    rollout, rolled = FakeRollout(), []

    def run(contexts: list[Context]) -> list:
        rolled.extend(c.context_id for c in contexts)
        return rollout([ctx(c.context_id.split("/")[0]) for c in contexts])

    counts = {}
    for selection in ("uniform", "informative"):
        pool = ContextPool(contexts, seed=0, selection=selection, rollouts_per_context=K)
        stats_total: Counter[str] = Counter()
        for i in range(30):
            if i == 15:
                rolled.clear()
            _, stats = collect_groups(GroupSampler(pool, 4, max_rounds=3), run, K)
            stats_total.update({"accepted": stats.accepted, "rejected": stats.rejected})
        counts[selection] = stats_total
        uniform_share = sum(c.startswith("all_") for c in rolled) / len(rolled)  # in the last 15 iterations
        if selection == "informative":
            assert 0.1 < uniform_share < 0.4, uniform_share  # rolled out less, never abandoned
    uniform, informative = counts["uniform"], counts["informative"]
    assert informative["accepted"] >= uniform["accepted"]
    # the same informative groups cost fewer dropped ones
    assert informative["rejected"] / informative["accepted"] < 0.5 * uniform["rejected"] / uniform["accepted"]


def test_an_unknown_context_selection_is_refused():
    with pytest.raises(ValueError, match="uniform' or 'informative"):
        ContextPool([ctx("mixed_a")], selection="greedy")


def test_the_sampler_counts_waiting_groups_as_outstanding_and_never_exceeds_its_budget():
    """The store trainer's use: groups come back in any order, those still out are not scheduled twice."""
    pool = ContextPool([ctx(n) for n in ("mixed_a", "all_success", "all_failure")], seed=0)
    sampler = GroupSampler(pool, wanted=3, max_rounds=2)
    assert sampler.budget == 6
    assert len(sampler.schedule(waiting=0)) == 3
    assert sampler.schedule(waiting=3) == []  # all three are out: nothing more to schedule
    assert not sampler.done(waiting=3)
    assert not sampler.judge("all_success", REWARDS["all_success"])
    assert len(sampler.schedule(waiting=2)) == 1  # one in place of the uniform group
    assert sampler.judge("mixed_a", REWARDS["mixed_a"])
    assert sampler.stats.accepted == 1 and sampler.stats.rejected_all_success == 1
    assert len(sampler.schedule(waiting=0)) == 2 and sampler.scheduled == 6
    assert sampler.schedule(waiting=0) == []  # the budget is spent
    assert not sampler.done(waiting=1)  # but a group is still out
    assert sampler.done(waiting=0)


def test_without_dynamic_sampling_the_budget_is_one_group_per_wanted_and_every_group_counts():
    pool = ContextPool([ctx(n) for n in ("all_success", "all_failure")], seed=0)
    sampler = GroupSampler(pool, wanted=2, dynamic_sampling=False, max_rounds=4)
    assert sampler.budget == 2 and not sampler.done()
    assert len(sampler.schedule()) == 2
    assert sampler.judge("all_success", REWARDS["all_success"]) and sampler.judge("all_failure", REWARDS["all_failure"])
    assert sampler.done()


@given(
    wanted=st.integers(1, 6),
    rounds=st.integers(1, 4),
    max_groups=st.none() | st.integers(0, 30),
    names=st.lists(st.sampled_from(sorted(REWARDS)), min_size=1, max_size=6, unique=True),
)
@settings(max_examples=60, deadline=None)
def test_collect_groups_stays_within_budget_and_stops(wanted, rounds, max_groups, names):
    rollout = FakeRollout()
    pool = ContextPool([ctx(n) for n in names], seed=0)
    groups, stats = collect_groups(GroupSampler(pool, wanted, max_rounds=rounds, max_groups=max_groups), rollout, K)
    rolled = len(stats.episodes) // K
    cap = wanted * rounds if max_groups is None else min(wanted * rounds, max_groups)
    assert rolled <= cap
    assert len(groups) == stats.accepted <= wanted
    assert len(groups) == wanted or rolled == cap  # it stops only when satisfied or out of budget


@pytest.mark.parametrize(
    ("budget", "k", "spent", "left"), [(0, 4, 100, None), (10, 4, 0, 2), (10, 4, 8, 0), (8, 4, 9, 0)]
)
def test_groups_left_in_the_episode_budget(budget, k, spent, left):
    config = RIPTConfig(rollouts_per_context=k, episode_budget=budget)
    assert groups_left(config, spent) == left
