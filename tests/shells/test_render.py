"""render.py, the only place numbers are formatted: units in every label, decimal and binary kept apart."""

from __future__ import annotations

import pytest

from memfit.cli.render import parse_unit, size
from memfit.core.errors import InvalidWorkload


@pytest.mark.parametrize(
    ("num_bytes", "unit", "text"),
    [
        (16_060_522_496, "GiB", "14.96 GiB"),  # 16,060,522,496 / 2^30 = 14.957...
        (16_060_522_496, "GB", "16.06 GB"),  # / 10^9 = 16.0605...
        (524_288, "GiB", "0.50 MiB"),  # under 0.01 GiB: 2^19 / 2^20 = 0.5 MiB, never "0.00 GiB"
        (500_000, "GB", "0.50 MB"),  # the decimal family stays decimal: 5 × 10^5 / 10^6
        (256, "GiB", "0.25 KiB"),  # 256 / 1024
        (7, "GB", "7 B"),  # below 0.01 KB: whole bytes
        (0, "GiB", "0.00 GiB"),  # nothing is nothing, in the display unit
    ],
)
def test_size_writes_the_unit_and_never_mixes_families(num_bytes: int, unit: str, text: str) -> None:
    """size() prints the unit with every figure; small figures step down within GiB→MiB→KiB or GB→MB→KB."""
    assert size(num_bytes, unit) == text


def test_parse_unit_accepts_any_case_and_refuses_others() -> None:
    """--unit gib means GiB; TB is refused with the two choices named."""
    assert parse_unit("gib") == "GiB"
    assert parse_unit("GB") == "GB"
    with pytest.raises(InvalidWorkload, match=r"GiB .* or GB"):
        parse_unit("TB")
