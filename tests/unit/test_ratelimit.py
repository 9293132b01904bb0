"""Token bucket tables and client addresses (control.ratelimit), with a hand-driven clock."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

import pytest

from control.ratelimit.buckets import BucketTable, retry_after
from control.ratelimit.clientip import limit_key, parse_address


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_gives_its_burst_then_refills_at_its_rate() -> None:
    clock = Clock()
    table = BucketTable(rate=2.0, burst=3, max_keys=10, clock=clock)
    assert [table.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert table.take("a") == pytest.approx(0.5)
    assert table.take("b") == 0.0  # another key has its own bucket
    clock.now += 0.25
    assert table.take("a") == pytest.approx(0.25)  # a refused call takes nothing
    clock.now += 0.25
    assert table.take("a") == 0.0
    assert table.take("a") > 0
    clock.now += 100
    assert [table.take("a") for _ in range(4)][-1] > 0  # never more than the burst


def test_idle_buckets_are_dropped_and_the_table_is_capped() -> None:
    clock = Clock()
    table = BucketTable(rate=1.0, burst=2, max_keys=4, clock=clock)
    for key in "abcdef":
        table.take(key)
    assert len(table) == 4 and table.evicted == 2 and "a" not in table and "f" in table
    table.take("c")  # used again: the least recently used is now d
    table.take("g")
    assert "d" not in table and "c" in table
    clock.now += 2.0  # burst / rate: every bucket is full again, as a new one would be
    table.take("h")
    table.take("h")
    assert len(table) <= 3


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert (retry_after(0.01), retry_after(1.0), retry_after(1.2)) == (1, 1, 2)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.2.3.4", "1.2.3.4"),
        (" 1.2.3.4 ", "1.2.3.4"),
        ("1.2.3.4:5678", "1.2.3.4"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("::ffff:10.0.0.1", "10.0.0.1"),
        ("unknown", None),
        ("", None),
        ("1.2.3.4.5", None),
        ("[::1", None),
    ],
)
def test_addresses_as_peers_and_proxies_write_them(text: str, expected: str | None) -> None:
    parsed = parse_address(text)
    assert (str(parsed) if parsed is not None else None) == expected


def test_an_ipv6_client_is_limited_by_its_64() -> None:
    a = limit_key(ip_address("2001:db8:1:2:aaaa::1"))
    b = limit_key(ip_address("2001:db8:1:2:bbbb::9"))
    assert a == b == str(ip_network("2001:db8:1:2::/64"))
    assert limit_key(ip_address("2001:db8:1:3::1")) != a
    assert limit_key(ip_address("127.0.0.2")) == "127.0.0.2"
    assert limit_key(None) == "unknown"
