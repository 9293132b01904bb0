"""Shared fixtures. Service fixtures (RabbitMQ, S3, MongoDB-wire) live in
``tests/plugin_services.py``; worker fixtures in ``tests/plugin_workers.py``."""

pytest_plugins = ["tests.plugin_services", "tests.plugin_workers"]


def pytest_collection_finish(session: object) -> None:
    """Every test module is imported now, and with them the server, aiortc, PyAV and
    pytest's own objects (~200,000 tracked objects): a full garbage collection scanned
    them all, and in a test process that runs the server and its WebRTC clients on one
    event loop a collection held everything (media senders included) for 100-300 ms
    (the e2e slow-callback report showed one of 272 ms). Frozen, they are never scanned
    again (``gc.freeze``, as ``parley run`` does after its start-up); what the tests
    make is collected as before."""
    import gc

    gc.collect()
    gc.freeze()
