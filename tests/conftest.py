"""Shared fixtures. Service fixtures (RabbitMQ, S3, MongoDB-wire) live in
``tests/plugin_services.py``; worker fixtures in ``tests/plugin_workers.py``."""

pytest_plugins = ["tests.plugin_services", "tests.plugin_workers"]
