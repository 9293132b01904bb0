"""DataProducer, against the real worker (after mediasoup's test-DataProducer.ts).

Messages really flowing from a data producer to data consumers are tested in
``test_data_consumer.py``, where the consumer side is observed.
"""

from __future__ import annotations

import asyncio
from unittest.mock import Mock

import pytest

from workers.data_producer import message_payload
from workers.errors import MediasoupError, MediasoupTypeError
from workers.router import Router

OPTIONS_1 = {
    "sctp_stream_parameters": {"streamId": 666},
    "label": "foo",
    "protocol": "bar",
    "app_data": {"foo": 1, "bar": "2"},
}
OPTIONS_2 = {
    "sctp_stream_parameters": {"streamId": 777, "maxRetransmits": 3},
    "label": "foo",
    "protocol": "bar",
    "paused": True,
    "app_data": {"foo": 1, "bar": "2"},
}


@pytest.fixture
async def transport1(router: Router):
    return await router.create_webrtc_transport(listen_ips=["127.0.0.1"], enable_sctp=True)


@pytest.fixture
async def transport2(router: Router):
    return await router.create_webrtc_transport(listen_ips=["127.0.0.1"], enable_sctp=True)


async def test_produce_data_succeeds(router: Router, transport1) -> None:
    on_new = Mock()
    transport1.observer.once("newdataproducer", on_new)
    data_producer = await transport1.produce_data(**OPTIONS_1)

    on_new.assert_called_once_with(data_producer)
    assert isinstance(data_producer.id, str) and not data_producer.closed
    assert data_producer.type == "sctp"
    assert data_producer.sctp_stream_parameters == {"streamId": 666, "ordered": True}
    assert data_producer.label == "foo" and data_producer.protocol == "bar"
    assert data_producer.paused is False
    assert data_producer.app_data == {"foo": 1, "bar": "2"}
    assert router.data_producers[data_producer.id] is data_producer

    dump = await router.dump()
    assert {"key": data_producer.id, "values": []} in dump["mapDataProducerIdDataConsumerIds"]
    assert dump["mapDataConsumerIdDataProducerId"] == []
    transport_dump = await transport1.dump()
    assert transport_dump["id"] == transport1.id
    assert transport_dump["dataProducerIds"] == [data_producer.id]
    assert transport_dump["dataConsumerIds"] == []


async def test_produce_data_unordered_and_paused(router: Router, transport2) -> None:
    data_producer = await transport2.produce_data(**OPTIONS_2)

    params = data_producer.sctp_stream_parameters
    assert params == {"streamId": 777, "ordered": False, "maxRetransmits": 3}
    assert "maxPacketLifeTime" not in params
    assert data_producer.paused is True
    assert (await data_producer.dump())["paused"] is True
    assert (await transport2.dump())["dataProducerIds"] == [data_producer.id]


async def test_sctp_stream_parameters_are_a_copy(transport1) -> None:
    data_producer = await transport1.produce_data(**OPTIONS_1)
    data_producer.sctp_stream_parameters["streamId"] = 1
    assert data_producer.sctp_stream_parameters["streamId"] == 666


async def test_produce_data_with_wrong_arguments_raises_type_error(transport1) -> None:
    with pytest.raises(MediasoupTypeError):
        await transport1.produce_data()
    with pytest.raises(MediasoupTypeError):
        await transport1.produce_data({})
    with pytest.raises(MediasoupTypeError):  # missing streamId
        await transport1.produce_data({"foo": "foo"})
    with pytest.raises(MediasoupTypeError):
        await transport1.produce_data({"streamId": 999, "ordered": True, "maxPacketLifeTime": 4000})
    with pytest.raises(MediasoupTypeError):
        await transport1.produce_data({"streamId": 999}, app_data="NOT-AN-OBJECT")
    with pytest.raises(MediasoupTypeError):  # does not fit the uint16 field
        await transport1.produce_data({"streamId": 70000})
    # The shared FlatBuffers builder is left clean: the transport still works.
    assert (await transport1.produce_data({"streamId": 1})).sctp_stream_parameters["streamId"] == 1


async def test_produce_data_with_used_stream_id_or_id_fails(transport1) -> None:
    first = await transport1.produce_data(**OPTIONS_1)
    with pytest.raises(MediasoupError):  # refused by the worker
        await transport1.produce_data({"streamId": 666})
    with pytest.raises(MediasoupTypeError):
        await transport1.produce_data({"streamId": 667}, id=first.id)


async def test_produce_data_without_sctp_fails(router: Router) -> None:
    transport = await router.create_webrtc_transport(listen_ips=["127.0.0.1"])
    with pytest.raises(MediasoupError):
        await transport.produce_data({"streamId": 1})


async def test_direct_data_producer(router: Router) -> None:
    transport = await router.create_direct_transport()
    data_producer = await transport.produce_data({"streamId": 5}, label="l", protocol="p")  # params ignored
    assert data_producer.type == "direct"
    assert data_producer.sctp_stream_parameters is None
    dump = await data_producer.dump()
    assert dump == {
        "id": data_producer.id,
        "type": "direct",
        "sctpStreamParameters": None,
        "label": "l",
        "protocol": "p",
        "paused": False,
    }


async def test_dump(transport1, transport2) -> None:
    data_producer1 = await transport1.produce_data(**OPTIONS_1)
    assert await data_producer1.dump() == {
        "id": data_producer1.id,
        "type": "sctp",
        "sctpStreamParameters": {"streamId": 666, "ordered": True},
        "label": "foo",
        "protocol": "bar",
        "paused": False,
    }
    data_producer2 = await transport2.produce_data(**OPTIONS_2)
    dump2 = await data_producer2.dump()
    assert dump2["sctpStreamParameters"] == {"streamId": 777, "ordered": False, "maxRetransmits": 3}
    assert dump2["paused"] is True


async def test_get_stats(transport1, transport2) -> None:
    for transport, options in ((transport1, OPTIONS_1), (transport2, OPTIONS_2)):
        data_producer = await transport.produce_data(**options)
        (stats,) = await data_producer.get_stats()
        assert stats["type"] == "data-producer"
        assert stats["label"] == data_producer.label and stats["protocol"] == data_producer.protocol
        assert stats["messagesReceived"] == 0 and stats["bytesReceived"] == 0
        assert isinstance(stats["timestamp"], int)


async def test_pause_and_resume(transport1) -> None:
    data_producer = await transport1.produce_data(**OPTIONS_1)
    on_pause, on_resume = Mock(), Mock()
    data_producer.observer.on("pause", on_pause)
    data_producer.observer.on("resume", on_resume)

    await data_producer.pause()
    assert data_producer.paused is True
    assert (await data_producer.dump())["paused"] is True
    await data_producer.resume()
    assert data_producer.paused is False
    assert (await data_producer.dump())["paused"] is False

    # Without waiting for each call, the observer still fires whenever the state flips.
    await asyncio.gather(
        data_producer.pause(),
        data_producer.resume(),
        data_producer.pause(),
        data_producer.pause(),
        data_producer.pause(),
        data_producer.resume(),
    )
    assert on_pause.call_count == 3
    assert on_resume.call_count == 3


async def test_pause_and_resume_emit_events_in_order(transport1) -> None:
    data_producer = await transport1.produce_data(**OPTIONS_1)
    events: list[str] = []
    data_producer.observer.once("resume", lambda: events.append("resume"))
    data_producer.observer.once("pause", lambda: events.append("pause"))
    await asyncio.gather(data_producer.pause(), data_producer.resume())
    assert events == ["pause", "resume"]
    assert data_producer.paused is False


async def test_close(router: Router, transport1) -> None:
    data_producer = await transport1.produce_data(**OPTIONS_1)
    on_close = Mock()
    data_producer.observer.once("close", on_close)
    data_producer.close()
    data_producer.close()  # idempotent

    on_close.assert_called_once_with()
    assert data_producer.closed
    assert data_producer.id not in router.data_producers
    assert data_producer.id not in transport1.data_producers
    dump = await router.dump()
    assert dump["mapDataProducerIdDataConsumerIds"] == [] and dump["mapDataConsumerIdDataProducerId"] == []
    transport_dump = await transport1.dump()
    assert transport_dump["dataProducerIds"] == [] and transport_dump["dataConsumerIds"] == []
    # Its stream id is free again.
    await transport1.produce_data({"streamId": 666})


async def test_methods_fail_once_closed(transport1) -> None:
    data_producer = await transport1.produce_data(**OPTIONS_1)
    data_producer.close()
    with pytest.raises(MediasoupError):
        await data_producer.dump()
    with pytest.raises(MediasoupError):
        await data_producer.get_stats()
    with pytest.raises(MediasoupError):
        await data_producer.pause()


async def test_transportclose_when_the_transport_closes(router: Router, transport2) -> None:
    data_producer = await transport2.produce_data(**OPTIONS_2)
    on_close, on_transport_close = Mock(), Mock()
    data_producer.observer.once("close", on_close)
    data_producer.once("transportclose", on_transport_close)
    transport2.close()

    on_transport_close.assert_called_once_with()
    on_close.assert_called_once_with()
    assert data_producer.closed
    assert data_producer.id not in router.data_producers


async def test_transportclose_when_the_router_closes(router: Router, transport1) -> None:
    data_producer = await transport1.produce_data(**OPTIONS_1)
    on_transport_close = Mock()
    data_producer.once("transportclose", on_transport_close)
    router.close()
    on_transport_close.assert_called_once_with()
    assert data_producer.closed


@pytest.mark.parametrize(
    ("message", "ppid", "expected"),
    [
        ("hello", None, (b"hello", 51)),
        ("héllo", None, ("héllo".encode(), 51)),
        (b"\x00\x01", None, (b"\x00\x01", 53)),
        (bytearray(b"ab"), None, (b"ab", 53)),
        ("", None, (b" ", 56)),
        (b"", None, (b"\x00", 57)),
        ("text", 53, (b"text", 53)),
        ("ignored", 56, (b" ", 56)),
        (b"ignored", 57, (b"\x00", 57)),
    ],
)
def test_send_ppids_follow_mediasoup(message, ppid, expected) -> None:
    assert message_payload(message, ppid) == expected


async def test_send_with_wrong_arguments_raises_type_error(router: Router) -> None:
    transport = await router.create_direct_transport()
    data_producer = await transport.produce_data()
    with pytest.raises(MediasoupTypeError):
        data_producer.send(123)
    with pytest.raises(MediasoupTypeError):
        data_producer.send("x", ppid="51")
    with pytest.raises(MediasoupTypeError):
        data_producer.send("x", subchannels=["a"])
    with pytest.raises(MediasoupTypeError):
        data_producer.send("x", required_subchannel="1")
    # Nothing was half-built: a later request still works.
    assert (await data_producer.get_stats())[0]["messagesReceived"] == 0
