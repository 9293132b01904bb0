"""The loopback test services answer real clients: one round trip per service, plus
restarts (same port, same data) of the S3 and MongoDB-wire servers."""

from __future__ import annotations

import os
import secrets
import time
from typing import Any

import pika
import pytest
from pymongo.errors import OperationFailure

pytestmark = pytest.mark.services


# --------------------------------------------------------------------------- RabbitMQ


def test_rabbitmq_publish_consume_roundtrip(rabbitmq):
    conn = pika.BlockingConnection(pika.URLParameters(rabbitmq.url))
    try:
        channel = conn.channel()
        channel.confirm_delivery()
        queue = channel.queue_declare(queue="", exclusive=True, auto_delete=True).method.queue
        body = b"parley-" + os.urandom(512)
        channel.basic_publish(
            exchange="",
            routing_key=queue,
            body=body,
            mandatory=True,
            properties=pika.BasicProperties(
                delivery_mode=pika.DeliveryMode.Persistent,
                content_type="application/octet-stream",
                headers={"test": "services"},
            ),
        )
        received = []

        def on_message(ch, method, properties, payload):
            received.append((properties, payload))
            ch.basic_ack(method.delivery_tag)

        channel.basic_consume(queue, on_message)
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.2)
        assert received, "the published message was not consumed within 10 s"
        properties, payload = received[0]
        assert payload == body
        assert properties.delivery_mode == pika.DeliveryMode.Persistent.value
        assert properties.headers == {"test": "services"}
    finally:
        conn.close()


# --------------------------------------------------------------------------- S3


def _bucket(client) -> str:
    name = f"parley-test-{secrets.token_hex(4)}"
    client.create_bucket(Bucket=name)
    return name


def _drop_bucket(client, bucket: str) -> None:
    for obj in client.list_objects_v2(Bucket=bucket).get("Contents", []):
        client.delete_object(Bucket=bucket, Key=obj["Key"])
    client.delete_bucket(Bucket=bucket)


def test_s3_put_get_roundtrip(s3):
    assert s3.endpoint.startswith("http://")
    client = s3.client()
    bucket = _bucket(client)
    try:
        data = os.urandom(300 * 1024)
        client.put_object(Bucket=bucket, Key="rec/room-1/part-0.mp4", Body=data, ContentType="video/mp4")
        got = client.get_object(Bucket=bucket, Key="rec/room-1/part-0.mp4")
        assert got["Body"].read() == data
        assert got["ContentLength"] == len(data)
        assert got["ContentType"] == "video/mp4"
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
        assert keys == ["rec/room-1/part-0.mp4"]
    finally:
        _drop_bucket(client, bucket)


def test_s3_refuses_wrong_secret(s3):
    from botocore.exceptions import ClientError

    from tests.services import _s3_client

    bad = _s3_client(s3.endpoint, s3.access_key, "not-the-secret", s3.region, retries={"max_attempts": 1})
    with pytest.raises(ClientError) as info:
        bad.list_buckets()
    assert info.value.response["Error"]["Code"] in {"SignatureDoesNotMatch", "AccessDenied", "InvalidAccessKeyId"}


@pytest.mark.parametrize("kill", [False, True], ids=["graceful", "killed"])
def test_s3_restart_keeps_objects(s3_owned, kill):
    client = s3_owned.client()
    bucket = _bucket(client)
    data = os.urandom(64 * 1024)
    client.put_object(Bucket=bucket, Key="before-restart.bin", Body=data)
    port = s3_owned.endpoint
    s3_owned.restart(kill=kill)
    assert s3_owned.endpoint == port
    client = s3_owned.client()  # a fresh client: no pooled connection to the old process
    assert client.get_object(Bucket=bucket, Key="before-restart.bin")["Body"].read() == data
    _drop_bucket(client, bucket)


def test_s3_stopped_refuses_then_comes_back(s3_owned):
    from botocore.exceptions import EndpointConnectionError

    client = s3_owned.client(retries={"max_attempts": 1}, connect_timeout=1)
    with s3_owned.stopped(), pytest.raises(EndpointConnectionError):
        client.list_buckets()
    s3_owned.client().list_buckets()


# --------------------------------------------------------------------------- MongoDB


async def test_mongo_insert_find_roundtrip(mongo):
    client = mongo.async_client()
    try:
        col = client[mongo.db_name][f"roundtrip_{secrets.token_hex(4)}"]
        await col.create_index([("room", 1), ("ts", -1)])
        await col.insert_many([{"room": "r1", "ts": i, "text": f"m{i}"} for i in range(5)])
        docs = await col.find({"room": "r1"}, {"_id": 0}).sort("ts", -1).limit(3).to_list()
        assert docs == [{"room": "r1", "ts": t, "text": f"m{t}"} for t in (4, 3, 2)]
        assert await col.count_documents({}) == 5
        await col.drop()
    finally:
        await client.close()


async def test_mongo_refuses_wrong_credentials(mongo):
    from pymongo import AsyncMongoClient

    if not mongo.owned and "@" not in mongo.uri:
        pytest.fail("MONGODB_URI has no credentials: cannot check that auth is enforced")
    wrong: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo.uri, password="not-the-password", serverSelectionTimeoutMS=5000
    )
    try:
        with pytest.raises(OperationFailure) as info:
            await wrong[mongo.db_name]["x"].find_one()
        assert "authentication failed" in str(info.value).lower()
    finally:
        await wrong.close()
    # No credentials at all: commands are refused too.
    host = mongo.uri.split("@", 1)[1].split("/", 1)[0]
    anonymous: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        f"mongodb://{host}/?directConnection=true", serverSelectionTimeoutMS=5000
    )
    try:
        with pytest.raises(OperationFailure):
            await anonymous[mongo.db_name]["x"].find_one()
    finally:
        await anonymous.close()


@pytest.mark.parametrize("kill", [False, True], ids=["graceful", "killed"])
async def test_mongo_restart_keeps_data(mongo_owned, kill):
    name = f"restart_{secrets.token_hex(4)}"
    client = mongo_owned.async_client()
    try:
        await client[mongo_owned.db_name][name].create_index("seq", unique=True)
        await client[mongo_owned.db_name][name].insert_many(
            [{"seq": i, "text": f"before restart {i}"} for i in range(3)]
        )
    finally:
        await client.close()
    uri = mongo_owned.uri
    mongo_owned.restart(kill=kill)
    assert mongo_owned.uri == uri  # same port, same credentials
    client = mongo_owned.async_client()
    try:
        col = client[mongo_owned.db_name][name]
        docs = await col.find({}, {"_id": 0}).sort("seq", 1).to_list()
        assert docs == [{"seq": i, "text": f"before restart {i}"} for i in range(3)]
        indexes = {ix["name"] async for ix in await col.list_indexes()}
        assert "seq_1" in indexes
        await col.drop()
    finally:
        await client.close()
