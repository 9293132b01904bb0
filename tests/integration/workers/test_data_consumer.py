"""DataConsumer, against the real worker (after mediasoup's test-DataConsumer.ts
and the data parts of test-DirectTransport.ts).

Data really flows here: a direct DataProducer on one DirectTransport sends
text and binary messages that come out of DataConsumers on another
DirectTransport as ``message`` events with their PPIDs, honouring pause,
resume and subchannels.

Not covered: ``bufferedamountlow`` and ``sctpsendbufferfull``, which need an
established SCTP association with a real peer.
"""

from __future__ import annotations

import asyncio
from unittest.mock import Mock

import pytest

from workers.errors import MediasoupError, MediasoupTypeError, NotFoundError, UnsupportedError
from workers.router import Router

SCTP_OPTIONS = {
    "sctp_stream_parameters": {"streamId": 12345, "ordered": False, "maxPacketLifeTime": 5000},
    "label": "foo",
    "protocol": "bar",
}
# Valid subchannels are 16-bit: larger values wrap (65536 is 0) and duplicates are dropped.
SUBCHANNELS = [0, 1, 1, 1, 2, 65535, 65536, 65537, 100]


@pytest.fixture
async def transport1(router: Router):
    return await router.create_webrtc_transport(listen_ips=["127.0.0.1"], enable_sctp=True)


@pytest.fixture
async def transport2(router: Router):
    return await router.create_webrtc_transport(listen_ips=["127.0.0.1"], enable_sctp=True)


@pytest.fixture
async def direct_transport(router: Router):
    return await router.create_direct_transport()


@pytest.fixture
async def sctp_data_producer(transport1):
    return await transport1.produce_data(**SCTP_OPTIONS)


@pytest.fixture
async def direct_data_producer(direct_transport):
    return await direct_transport.produce_data()


class Messages:
    """Collects ``message`` events and lets a test wait for a count of them."""

    def __init__(self, data_consumer) -> None:
        self.items: list[tuple[bytes, int]] = []
        self._changed = asyncio.Event()
        data_consumer.on("message", self._on_message)

    def _on_message(self, message: bytes, ppid: int) -> None:
        self.items.append((message, ppid))
        self._changed.set()

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[tuple[bytes, int]]:
        async with asyncio.timeout(timeout):
            while len(self.items) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.items


# -- creation, dumps, stats ------------------------------------------------------------


async def test_consume_data_succeeds(router: Router, transport2, sctp_data_producer) -> None:
    on_new = Mock()
    transport2.observer.once("newdataconsumer", on_new)
    data_consumer = await transport2.consume_data(
        sctp_data_producer.id, max_packet_life_time=4000, subchannels=SUBCHANNELS, app_data={"baz": "LOL"}
    )

    on_new.assert_called_once_with(data_consumer)
    assert isinstance(data_consumer.id, str) and not data_consumer.closed
    assert data_consumer.data_producer_id == sctp_data_producer.id
    assert data_consumer.type == "sctp"
    params = data_consumer.sctp_stream_parameters
    assert isinstance(params["streamId"], int)
    assert params["ordered"] is False and params["maxPacketLifeTime"] == 4000 and "maxRetransmits" not in params
    assert data_consumer.label == "foo" and data_consumer.protocol == "bar"
    assert data_consumer.paused is False and data_consumer.data_producer_paused is False
    assert sorted(data_consumer.subchannels) == [0, 1, 2, 100, 65535]
    assert data_consumer.buffered_amount_low_threshold == 1024
    assert data_consumer.app_data == {"baz": "LOL"}

    dump = await router.dump()
    assert {"key": sctp_data_producer.id, "values": [data_consumer.id]} in dump["mapDataProducerIdDataConsumerIds"]
    assert {"key": data_consumer.id, "value": sctp_data_producer.id} in dump["mapDataConsumerIdDataProducerId"]
    transport_dump = await transport2.dump()
    assert transport_dump["dataProducerIds"] == [] and transport_dump["dataConsumerIds"] == [data_consumer.id]


async def test_consume_data_with_wrong_arguments_fails(transport2, sctp_data_producer) -> None:
    with pytest.raises(MediasoupTypeError):
        await transport2.consume_data("")
    with pytest.raises(NotFoundError):
        await transport2.consume_data("unknown-data-producer")
    with pytest.raises(MediasoupTypeError):
        await transport2.consume_data(sctp_data_producer.id, app_data="NOT-AN-OBJECT")
    with pytest.raises(MediasoupTypeError):
        await transport2.consume_data(sctp_data_producer.id, subchannels=["a"])
    # The SCTP stream id allocated for the refused consumer was given back.
    assert not any(transport2._sctp_stream_ids or b"")


async def test_consume_data_without_sctp_fails(router: Router, sctp_data_producer) -> None:
    transport = await router.create_webrtc_transport(listen_ips=["127.0.0.1"])
    with pytest.raises(UnsupportedError):
        await transport.consume_data(sctp_data_producer.id)


async def test_dump(transport2, sctp_data_producer) -> None:
    data_consumer = await transport2.consume_data(
        sctp_data_producer.id, ordered=True, subchannels=SUBCHANNELS, app_data={"baz": "LOL"}
    )
    dump = await data_consumer.dump()
    assert dump["id"] == data_consumer.id
    assert dump["dataProducerId"] == sctp_data_producer.id
    assert dump["type"] == "sctp"
    assert dump["sctpStreamParameters"] == {
        "streamId": data_consumer.sctp_stream_parameters["streamId"],
        "ordered": True,
    }
    assert dump["label"] == "foo" and dump["protocol"] == "bar"
    assert dump["paused"] is False and dump["dataProducerPaused"] is False
    assert sorted(dump["subchannels"]) == [0, 1, 2, 100, 65535]
    assert dump["bufferedAmount"] == 0 and dump["bufferedAmountLowThreshold"] == 1024


async def test_get_stats(transport2, sctp_data_producer) -> None:
    data_consumer = await transport2.consume_data(sctp_data_producer.id)
    (stats,) = await data_consumer.get_stats()
    assert stats["type"] == "data-consumer"
    assert stats["label"] == data_consumer.label and stats["protocol"] == data_consumer.protocol
    assert stats["messagesSent"] == 0 and stats["bytesSent"] == 0 and stats["bufferedAmount"] == 0


async def test_buffered_amount_and_threshold(transport2, sctp_data_producer) -> None:
    data_consumer = await transport2.consume_data(sctp_data_producer.id)
    assert await data_consumer.get_buffered_amount() == 0
    await data_consumer.set_buffered_amount_low_threshold(4096)
    assert data_consumer.buffered_amount_low_threshold == 4096
    assert (await data_consumer.dump())["bufferedAmountLowThreshold"] == 4096
    with pytest.raises(MediasoupTypeError):
        await data_consumer.set_buffered_amount_low_threshold(-1)


async def test_set_subchannels(transport2, sctp_data_producer) -> None:
    data_consumer = await transport2.consume_data(sctp_data_producer.id)
    await data_consumer.set_subchannels([999, 999, 998, 65536])
    assert sorted(data_consumer.subchannels) == [0, 998, 999]


async def test_add_and_remove_subchannel(transport2, sctp_data_producer) -> None:
    data_consumer = await transport2.consume_data(sctp_data_producer.id)
    await data_consumer.set_subchannels([])
    assert data_consumer.subchannels == []
    await data_consumer.add_subchannel(5)
    assert data_consumer.subchannels == [5]
    await data_consumer.add_subchannel(10)
    assert sorted(data_consumer.subchannels) == [5, 10]
    await data_consumer.add_subchannel(5)
    assert sorted(data_consumer.subchannels) == [5, 10]
    await data_consumer.remove_subchannel(666)
    assert sorted(data_consumer.subchannels) == [5, 10]
    await data_consumer.remove_subchannel(5)
    assert data_consumer.subchannels == [10]
    await data_consumer.set_subchannels([])
    assert data_consumer.subchannels == []


async def test_consume_direct_data_producer_on_sctp_transport(router: Router, transport2, direct_data_producer) -> None:
    on_new = Mock()
    transport2.observer.once("newdataconsumer", on_new)
    data_consumer = await transport2.consume_data(direct_data_producer.id)

    on_new.assert_called_once_with(data_consumer)
    assert data_consumer.data_producer_id == direct_data_producer.id
    assert data_consumer.type == "sctp"
    params = data_consumer.sctp_stream_parameters
    assert isinstance(params["streamId"], int) and params["ordered"] is True
    assert "maxPacketLifeTime" not in params and "maxRetransmits" not in params
    assert data_consumer.label == "" and data_consumer.protocol == ""
    assert data_consumer.subchannels == [] and data_consumer.app_data == {}
    dump = await router.dump()
    assert {"key": direct_data_producer.id, "values": [data_consumer.id]} in dump["mapDataProducerIdDataConsumerIds"]
    assert {"key": data_consumer.id, "value": direct_data_producer.id} in dump["mapDataConsumerIdDataProducerId"]


async def test_dump_of_consumer_of_direct_data_producer(transport2, direct_data_producer) -> None:
    data_consumer = await transport2.consume_data(
        direct_data_producer.id, ordered=False, max_retransmits=2, subchannels=[0, 1]
    )
    dump = await data_consumer.dump()
    assert dump["type"] == "sctp"
    assert dump["sctpStreamParameters"] == {
        "streamId": data_consumer.sctp_stream_parameters["streamId"],
        "ordered": False,
        "maxRetransmits": 2,
    }
    assert dump["label"] == "" and dump["protocol"] == ""
    assert sorted(dump["subchannels"]) == [0, 1]


async def test_consume_data_on_direct_transport(direct_transport, direct_data_producer, sctp_data_producer) -> None:
    on_new = Mock()
    direct_transport.observer.once("newdataconsumer", on_new)
    data_consumer = await direct_transport.consume_data(sctp_data_producer.id, paused=True, app_data={"hehe": "HEHE"})

    on_new.assert_called_once_with(data_consumer)
    assert data_consumer.type == "direct"
    assert data_consumer.sctp_stream_parameters is None
    assert data_consumer.label == "foo" and data_consumer.protocol == "bar"
    assert data_consumer.paused is True
    assert data_consumer.app_data == {"hehe": "HEHE"}
    transport_dump = await direct_transport.dump()
    assert transport_dump["dataProducerIds"] == [direct_data_producer.id]
    assert transport_dump["dataConsumerIds"] == [data_consumer.id]

    dump = await data_consumer.dump()
    assert dump["type"] == "direct" and dump["sctpStreamParameters"] is None
    assert dump["paused"] is True and dump["subchannels"] == []
    (stats,) = await data_consumer.get_stats()
    assert stats["type"] == "data-consumer" and stats["messagesSent"] == 0 and stats["bytesSent"] == 0


async def test_send_on_direct_data_consumer_is_refused(direct_transport, direct_data_producer) -> None:
    data_consumer = await direct_transport.consume_data(direct_data_producer.id)
    with pytest.raises(MediasoupTypeError):  # only SCTP data consumers can send to their endpoint
        await data_consumer.send("hello")
    with pytest.raises(MediasoupTypeError):
        await data_consumer.send(42)


# -- pause, resume, close ----------------------------------------------------------------


async def test_pause_and_resume(transport2, sctp_data_producer) -> None:
    data_consumer = await transport2.consume_data(sctp_data_producer.id)
    on_pause, on_resume = Mock(), Mock()
    data_consumer.observer.on("pause", on_pause)
    data_consumer.observer.on("resume", on_resume)

    await data_consumer.pause()
    assert data_consumer.paused is True and (await data_consumer.dump())["paused"] is True
    await data_consumer.resume()
    assert data_consumer.paused is False and (await data_consumer.dump())["paused"] is False

    await asyncio.gather(
        data_consumer.pause(),
        data_consumer.resume(),
        data_consumer.pause(),
        data_consumer.pause(),
        data_consumer.pause(),
        data_consumer.resume(),
    )
    assert on_pause.call_count == 3
    assert on_resume.call_count == 3


async def test_data_producer_pause_and_resume_reach_the_consumer(transport2, sctp_data_producer) -> None:
    data_consumer = await transport2.consume_data(sctp_data_producer.id)
    events: list[str] = []
    data_consumer.observer.once("resume", lambda: events.append("observer resume"))
    data_consumer.observer.once("pause", lambda: events.append("observer pause"))
    data_consumer.on("dataproducerpause", lambda: events.append("dataproducerpause"))
    data_consumer.on("dataproducerresume", lambda: events.append("dataproducerresume"))

    await asyncio.gather(sctp_data_producer.pause(), sctp_data_producer.resume())
    await asyncio.sleep(0.1)  # the worker notifies the consumer after answering the producer

    assert events == ["dataproducerpause", "observer pause", "dataproducerresume", "observer resume"]
    assert data_consumer.paused is False and data_consumer.data_producer_paused is False


async def test_consumer_of_paused_data_producer_starts_producer_paused(transport2, sctp_data_producer) -> None:
    await sctp_data_producer.pause()
    data_consumer = await transport2.consume_data(sctp_data_producer.id)
    assert data_consumer.data_producer_paused is True and data_consumer.paused is False


async def test_close(router: Router, transport2, sctp_data_producer) -> None:
    data_consumer = await transport2.consume_data(sctp_data_producer.id)
    on_close = Mock()
    data_consumer.observer.once("close", on_close)
    data_consumer.close()
    data_consumer.close()  # idempotent

    on_close.assert_called_once_with()
    assert data_consumer.closed and data_consumer.id not in transport2.data_consumers
    dump = await router.dump()
    assert {"key": sctp_data_producer.id, "values": []} in dump["mapDataProducerIdDataConsumerIds"]
    assert dump["mapDataConsumerIdDataProducerId"] == []
    transport_dump = await transport2.dump()
    assert transport_dump["dataProducerIds"] == [] and transport_dump["dataConsumerIds"] == []


async def test_methods_fail_once_closed(transport2, sctp_data_producer) -> None:
    data_consumer = await transport2.consume_data(sctp_data_producer.id)
    data_consumer.close()
    with pytest.raises(MediasoupError):
        await data_consumer.dump()
    with pytest.raises(MediasoupError):
        await data_consumer.get_stats()


async def test_dataproducerclose_when_the_data_producer_closes(transport2, sctp_data_producer) -> None:
    data_consumer = await transport2.consume_data(sctp_data_producer.id)
    on_close = Mock()
    data_consumer.observer.once("close", on_close)
    closed = asyncio.get_running_loop().create_future()
    data_consumer.once("dataproducerclose", lambda: closed.set_result(True))

    sctp_data_producer.close()
    await asyncio.wait_for(closed, 2)

    on_close.assert_called_once_with()
    assert data_consumer.closed and data_consumer.id not in transport2.data_consumers


async def test_transportclose_when_the_transport_closes(router: Router, transport2, sctp_data_producer) -> None:
    data_consumer = await transport2.consume_data(sctp_data_producer.id)
    on_close, on_transport_close = Mock(), Mock()
    data_consumer.observer.once("close", on_close)
    data_consumer.once("transportclose", on_transport_close)
    transport2.close()

    on_transport_close.assert_called_once_with()
    on_close.assert_called_once_with()
    assert data_consumer.closed
    dump = await router.dump()
    assert {"key": sctp_data_producer.id, "values": []} in dump["mapDataProducerIdDataConsumerIds"]
    assert dump["mapDataConsumerIdDataProducerId"] == []


async def test_transportclose_when_the_worker_closes(worker, transport2, sctp_data_producer) -> None:
    data_consumer = await transport2.consume_data(sctp_data_producer.id)
    on_transport_close = Mock()
    data_consumer.once("transportclose", on_transport_close)
    worker.close()
    on_transport_close.assert_called_once_with()
    assert data_consumer.closed and sctp_data_producer.closed


# -- messages through DirectTransports ------------------------------------------------


async def test_text_and_binary_messages_flow_between_direct_transports(router: Router) -> None:
    send_transport = await router.create_direct_transport()
    recv_transport = await router.create_direct_transport()
    data_producer = await send_transport.produce_data(label="chat", protocol="json")
    data_consumer = await recv_transport.consume_data(data_producer.id)
    messages = Messages(data_consumer)

    data_producer.send("héllo wörld")
    data_producer.send(b"\x00\x01\x02\xff")
    data_producer.send("")
    data_producer.send(b"")
    data_producer.send('{"a": 1}', ppid=53)  # an explicit PPID wins
    received = await messages.wait_for(5)

    assert received == [
        ("héllo wörld".encode(), 51),
        (b"\x00\x01\x02\xff", 53),
        (b" ", 56),  # WebRTC's empty string
        (b"\x00", 57),  # WebRTC's empty binary
        (b'{"a": 1}', 53),
    ]
    assert all(isinstance(message, bytes) for message, _ in received)
    (producer_stats,) = await data_producer.get_stats()
    assert producer_stats["messagesReceived"] == 5
    (consumer_stats,) = await data_consumer.get_stats()
    assert consumer_stats["label"] == "chat" and consumer_stats["protocol"] == "json"
    assert consumer_stats["messagesSent"] == 5
    assert consumer_stats["bytesSent"] == sum(len(message) for message, _ in received)


async def test_messages_reach_every_consumer_including_one_on_the_same_transport(router: Router) -> None:
    transport = await router.create_direct_transport()
    other = await router.create_direct_transport()
    data_producer = await transport.produce_data()
    local = Messages(await transport.consume_data(data_producer.id))
    remote = Messages(await other.consume_data(data_producer.id))
    data_producer.send("to all")
    assert await local.wait_for(1) == [(b"to all", 51)]
    assert await remote.wait_for(1) == [(b"to all", 51)]


async def test_send_honours_producer_and_consumer_pause(router: Router) -> None:
    """mediasoup's "dataProducer.send() succeeds": 200 messages, half text and
    half binary; those sent while the producer or the consumer is paused are lost."""
    send_transport = await router.create_direct_transport()
    recv_transport = await router.create_direct_transport()
    data_producer = await send_transport.produce_data(label="foo", protocol="bar", app_data={"foo": "bar"})
    data_consumer = await recv_transport.consume_data(data_producer.id)
    num_messages, pause_sending, resume_sending, pause_receiving, resume_receiving = 200, 10, 20, 40, 60
    expected = num_messages - (resume_sending - pause_sending) - (resume_receiving - pause_receiving)
    messages = Messages(data_consumer)

    sent_bytes = effectively_sent_bytes = 0
    for message_id in range(1, num_messages + 1):
        if message_id == pause_sending:
            await data_producer.pause()
        elif message_id == resume_sending:
            await data_producer.resume()
        elif message_id == pause_receiving:
            await data_consumer.pause()
        elif message_id == resume_receiving:
            await data_consumer.resume()
        text = str(message_id)
        message: str | bytes = text if message_id < num_messages / 2 else text.encode()
        data_producer.send(message)
        sent_bytes += len(text)
        if not data_producer.paused and not data_consumer.paused:
            effectively_sent_bytes += len(text)

    received = await messages.wait_for(expected)
    await asyncio.sleep(0.1)  # nothing more comes
    assert len(messages.items) == expected
    ids = [int(message.decode()) for message, _ in received]
    assert ids[-1] == num_messages
    assert not set(ids) & set(range(pause_sending, resume_sending))
    assert not set(ids) & set(range(pause_receiving, resume_receiving))
    for message_id, (_, ppid) in zip(ids, received, strict=False):
        assert ppid == (51 if message_id < num_messages / 2 else 53)
    assert sum(len(message) for message, _ in received) == effectively_sent_bytes

    (producer_stats,) = await data_producer.get_stats()
    assert producer_stats["messagesReceived"] == num_messages and producer_stats["bytesReceived"] == sent_bytes
    (consumer_stats,) = await data_consumer.get_stats()
    assert consumer_stats["messagesSent"] == expected and consumer_stats["bytesSent"] == effectively_sent_bytes


async def test_send_with_subchannels(router: Router) -> None:
    """mediasoup's "dataProducer.send() with subchannels succeeds"."""
    send_transport = await router.create_direct_transport()
    recv_transport = await router.create_direct_transport()
    data_producer = await send_transport.produce_data()
    consumer1 = await recv_transport.consume_data(data_producer.id, subchannels=[1, 11, 666])
    consumer2 = await recv_transport.consume_data(data_producer.id, subchannels=[2, 22, 666])
    messages1, messages2 = Messages(consumer1), Messages(consumer2)

    data_producer.send("both")
    data_producer.send("both", subchannels=[1, 2])
    data_producer.send("both", subchannels=[11, 22, 33], required_subchannel=666)
    data_producer.send("none", subchannels=[3], required_subchannel=666)
    data_producer.send("none", subchannels=[666], required_subchannel=3)
    data_producer.send("dc1", subchannels=[1])
    data_producer.send("dc1", subchannels=[11], required_subchannel=1)
    data_producer.send("dc1", subchannels=[666], required_subchannel=11)
    data_producer.send("dc2", subchannels=[666], required_subchannel=2)
    data_producer.send("dc2", subchannels=[666], ignored_subchannel=1)
    # Subscribe consumer2 to subchannel 1 too without waiting for the answer: once
    # the task has sent its request (sleep(0)), the worker handles it before the
    # next message, since the channel keeps order.
    subscribing = asyncio.ensure_future(consumer2.set_subchannels([*consumer2.subchannels, 1]))
    await asyncio.sleep(0)
    data_producer.send("both", subchannels=[1], required_subchannel=666)
    await subscribing

    received1 = [message.decode() for message, _ in await messages1.wait_for(7)]
    received2 = [message.decode() for message, _ in await messages2.wait_for(6)]
    await asyncio.sleep(0.1)
    assert len(messages1.items) == 7 and len(messages2.items) == 6
    assert received1 == ["both", "both", "both", "dc1", "dc1", "dc1", "both"]
    assert received2 == ["both", "both", "both", "dc2", "dc2", "both"]
