"""pytest fixtures for the loopback test services (see tests/services.py).

Session-scoped and lazy: a server starts the first time a test asks for its fixture
and is stopped (temp dirs removed) at the end of the session. A service that cannot
be had fails the test at setup with a message saying what is missing; it never skips.

    def test_x(rabbitmq, s3, mongo):
        rabbitmq.url                       # amqp://...
        s3.endpoint, s3.access_key, s3.secret_key, s3.region, s3.client()
        mongo.uri, mongo.db_name           # uri carries credentials
        s3.restart(); mongo.restart()      # same port, same data (harness-owned only)
        with s3.stopped(): ...             # down inside the block, up again after

Tests that stop or restart a server take the `*_owned` fixture (`s3_owned`,
`mongo_owned`, `rabbitmq_owned`): the same object as the plain one when the harness
started that, else a second, harness-owned server -- an external one is never stopped.
An owned server a test left stopped is started again for the next test that asks.

`services_env` gives the app's environment variables (MONGODB_URI, RABBITMQ_URL,
MINIO_ENDPOINT, MINIO_ACCESS_KEY, MINIO_SECRET_KEY) for all three services.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from control.cluster import Registry
from tests.services import MongoService, RabbitMQService, RedisService, S3Service, ServiceUnavailable, TestServices


@pytest.fixture(scope="session")
def test_services():
    """The session's service registry; owns every server it starts."""
    services = TestServices()
    try:
        yield services
    finally:
        services.close()


@pytest.fixture(autouse=True)
def _test_services_revived(test_services):
    """Before each test: start again any owned server an earlier test left stopped."""
    test_services.revive()


def _get(services: TestServices, name: str, *, owned: bool = False):
    try:
        return services.get(name, owned=owned)
    except ServiceUnavailable as exc:
        message = str(exc)
    pytest.fail(f"test service unavailable: {message}", pytrace=False)


@pytest.fixture(scope="session")
def rabbitmq(test_services) -> RabbitMQService:
    return _get(test_services, "rabbitmq")


@pytest.fixture(scope="session")
def s3(test_services) -> S3Service:
    return _get(test_services, "s3")


@pytest.fixture(scope="session")
def mongo(test_services) -> MongoService:
    return _get(test_services, "mongo")


@pytest.fixture(scope="session")
def rabbitmq_owned(test_services) -> RabbitMQService:
    """A broker this harness started (stop/restart allowed); the same as `rabbitmq`
    unless RABBITMQ_URL or a running broker on :5672 supplied that one."""
    return _get(test_services, "rabbitmq", owned=True)


@pytest.fixture(scope="session")
def s3_owned(test_services) -> S3Service:
    """An S3 server this harness started (stop/restart allowed); the same as `s3`
    unless MINIO_ENDPOINT supplied that one."""
    return _get(test_services, "s3", owned=True)


@pytest.fixture(scope="session")
def mongo_owned(test_services) -> MongoService:
    """A MongoDB-wire server this harness started (stop/restart allowed); the same as
    `mongo` unless MONGODB_URI supplied that one."""
    return _get(test_services, "mongo", owned=True)


@pytest.fixture(scope="session")
def redis_server(test_services) -> RedisService:
    """Redis for the cluster tests (``redis_server.url``: the test database, theirs to flush)."""
    return _get(test_services, "redis")


@pytest.fixture
async def registry(redis_server: RedisService) -> AsyncIterator[Registry]:
    """The cluster's registry in the test database of the loopback Redis, flushed
    before and after the test."""
    client = Redis.from_url(redis_server.url, decode_responses=True)
    await client.flushdb()
    try:
        yield Registry(client)
    finally:
        await client.flushdb()
        await client.aclose()


@pytest.fixture(scope="session")
def redis_owned(test_services) -> RedisService:
    """A Redis this harness started (restart allowed); the same as `redis_server` unless
    REDIS_URL supplied that one."""
    return _get(test_services, "redis", owned=True)


@pytest.fixture(scope="session")
def services_env(rabbitmq, s3, mongo) -> dict[str, str]:
    """Environment variables pointing the app at all three services."""
    return {**rabbitmq.env(), **s3.env(), **mongo.env()}


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """One line per service used in the run: where it came from, start-up time."""
    lines = TestServices.summary_lines()
    if lines:
        terminalreporter.write_sep("-", "test services")
        for line in lines:
            terminalreporter.write_line(line)
