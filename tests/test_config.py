"""Settings helpers: byte sizes from text (the cache bound of the environment)."""

from __future__ import annotations

import pytest

from stylegallery import pipeline as pl
from stylegallery.config import parse_bytes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1500000000", 1_500_000_000),
        ("1.5GB", 1_500_000_000),
        ("512MB", 512_000_000),
        ("2GiB", 2 * 2**30),
        (" 64 mib ", 64 * 2**20),
        ("15mb", 15_000_000),
        ("0", 0),
        ("10B", 10),
        (".5KiB", 512),
        (4096, 4096),
    ],
)
def test_parse_bytes_reads_plain_decimal_and_binary_sizes(text, expected) -> None:
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "2 GB extra", "-1", "-1GB", "1.5 GBs", "1e9", "nan", "inf", "GB",
                                  "1,5GB", "0x10", True])
def test_parse_bytes_refuses_anything_else_with_one_clear_line(text) -> None:
    with pytest.raises(ValueError) as excinfo:
        parse_bytes(text, "STYLEGALLERY_CACHE_BYTES")
    message = str(excinfo.value)
    assert message.startswith(f"STYLEGALLERY_CACHE_BYTES={text!r} is invalid: expected a byte count such as")
    assert "2GiB" in message and "\n" not in message


def test_the_pipeline_cache_bound_comes_from_the_environment_when_not_given(monkeypatch) -> None:
    monkeypatch.setenv("STYLEGALLERY_CACHE_BYTES", "2GB")  # crashed `import stylegallery.pipeline` with int()
    assert pl.Pipeline().cache.max_bytes == 2_000_000_000
    assert pl.Pipeline(cache_bytes=123).cache.max_bytes == 123
    monkeypatch.delenv("STYLEGALLERY_CACHE_BYTES")
    assert pl.Pipeline().cache.max_bytes == pl.DEFAULT_CACHE_BYTES
    monkeypatch.setenv("STYLEGALLERY_CACHE_BYTES", "lots")
    with pytest.raises(ValueError, match="STYLEGALLERY_CACHE_BYTES='lots' is invalid"):
        pl.Pipeline()
