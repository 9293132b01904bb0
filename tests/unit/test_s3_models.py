"""S3 stores share botocore's parsed models (control/storage/s3.py): a store made after
the first reads no model file. Building a client sends no request, so no server is needed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.loaders import JSONFileLoader

from control.storage.s3 import S3Storage, load_models


@pytest.fixture
def model_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The JSON model files botocore reads from now on (it still reads them)."""
    reads: list[str] = []
    original = JSONFileLoader.load_file

    def load_file(self: JSONFileLoader, file_path: str) -> Any:
        reads.append(file_path)
        return original(self, file_path)

    monkeypatch.setattr(JSONFileLoader, "load_file", load_file)
    yield reads


def _store(endpoint: str) -> S3Storage:
    return S3Storage(endpoint, "access", "secret", "bucket")


def test_a_second_store_parses_no_model(model_reads: list[str]) -> None:
    first, second = _store("http://127.0.0.1:9"), _store("http://127.0.0.2:9")
    first._clients()
    model_reads.clear()
    client, _ = second._clients()
    assert model_reads == []
    assert client.meta.endpoint_url == "http://127.0.0.2:9"  # its own client, its own endpoint


def test_models_parsed_ahead_are_not_parsed_again(model_reads: list[str]) -> None:
    load_models()
    model_reads.clear()
    _store("http://127.0.0.3:9")._clients()
    assert model_reads == []
