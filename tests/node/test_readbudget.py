"""The per-account read budget: a pure policy, tested with plain numbers."""

from __future__ import annotations

from chinwag.node.readbudget import ReadBudgets, message_cost


def test_message_cost_counts_items_bytes_and_frames() -> None:
    assert message_cost(0, 0, 1) == 30
    assert message_cost(1024 * 1024, 8192, 1) == 20 + 8192 + 4096 + 10


def test_sessions_of_one_account_share_a_bucket() -> None:
    budgets = ReadBudgets(rate=1000, burst=100)
    budgets.attach("mallory", 0.0)
    budgets.attach("mallory", 0.0)
    assert budgets.charge("mallory", 100, 0.0) == 0
    # The second connection pays for the first's spending: 50 units of debt.
    assert budgets.charge("mallory", 50, 0.0) == 0.05
    budgets.attach("alice", 0.0)
    assert budgets.charge("alice", 100, 0.0) == 0


def test_reconnecting_does_not_buy_a_fresh_burst() -> None:
    budgets = ReadBudgets(rate=1000, burst=100)
    budgets.attach("mallory", 0.0)
    budgets.charge("mallory", 300, 0.0)
    budgets.detach("mallory", 0.0)
    budgets.attach("mallory", 0.01)
    assert budgets.charge("mallory", 1, 0.01) > 0.1  # still in debt
    budgets.detach("mallory", 0.01)
    # Forgotten once it would have refilled: the table stays small.
    budgets.attach("alice", 10.0)
    assert len(budgets) == 1
