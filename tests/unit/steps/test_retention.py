"""Retention of finished steps: the step's ttl, else its pool's, deletions with the uid."""

from __future__ import annotations

from datetime import UTC, datetime

from kubernetes_asyncio.client.exceptions import ApiException

from agentpool.steps.retention import Retention, ttl_of

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


class Fake:
    def __init__(self) -> None:
        self.now = T0.timestamp()
        self.pool_ttl: dict[str, int | None] = {}
        self.deleted: list[tuple[str, str, str]] = []
        self.fail_with: int | None = None

    async def delete(self, namespace: str, name: str, uid: str) -> None:
        if self.fail_with is not None:
            raise ApiException(status=self.fail_with, reason="injected")
        self.deleted.append((namespace, name, uid))

    def retention(self) -> Retention:
        return Retention(self.delete, self.pool_ttl.get, lambda pool: None, clock=lambda: self.now)


def test_the_steps_own_ttl_wins_over_the_pools() -> None:
    assert ttl_of(5, 60) == 5
    assert ttl_of(0, 60) == 0
    assert ttl_of(None, 60) == 60
    assert ttl_of(None, None) is None


async def test_a_step_is_deleted_once_its_ttl_has_passed_with_its_uid() -> None:
    fake = Fake()
    retention = fake.retention()
    retention.keep(("ns", "s1", "uid-1", "ns/p"), T0, 30)

    assert await retention.delete_due() == 30.0
    fake.now += 30
    assert await retention.delete_due() is None
    assert fake.deleted == [("ns", "s1", "uid-1")]


async def test_the_pool_default_applies_and_follows_its_changes() -> None:
    fake = Fake()
    retention = fake.retention()
    retention.keep(("ns", "s1", "uid-1", "ns/p"), T0, None)
    assert await retention.delete_due() is None  # no default yet: kept

    fake.pool_ttl["ns/p"] = 10
    retention.pool_changed("ns/p")
    fake.now += 10
    await retention.delete_due()

    assert fake.deleted == [("ns", "s1", "uid-1")]


async def test_a_step_deleted_meanwhile_is_not_deleted_again() -> None:
    fake = Fake()
    retention = fake.retention()
    retention.keep(("ns", "s1", "uid-1", "ns/p"), T0, 0)
    retention.forget("uid-1")

    await retention.delete_due()

    assert fake.deleted == []


async def test_gone_or_replaced_steps_count_as_done_and_errors_back_off() -> None:
    fake = Fake()
    retention = fake.retention()
    retention.keep(("ns", "s1", "uid-1", "ns/p"), T0, 0)
    fake.fail_with = 500
    wait = await retention.delete_due()
    assert wait is not None and wait > 0  # backing off, the step still due

    fake.fail_with = 409  # the name now belongs to a new step: leave it alone
    await retention.delete_due()
    assert fake.deleted == []
    assert await retention.delete_due() is None  # nothing left to do
