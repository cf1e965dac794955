"""Model versions in order: numbers compare as numbers, pre-releases before releases, and a
spelling PEP 440 cannot read sorts before every one it can."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.versions import version_key

Triple = tuple[int, int, int]
triples = st.tuples(*[st.integers(min_value=0, max_value=10_000)] * 3)


def text(version: Triple) -> str:
    return ".".join(str(part) for part in version)


def test_ten_comes_after_nine() -> None:
    assert version_key("1.10.0") > version_key("1.9.0")
    assert max(["1.9.0", "1.10.0", "1.2.0"], key=version_key) == "1.10.0"


def test_pre_releases_come_before_their_release_and_odd_spellings_first() -> None:
    ordered = ["build-7", "nightly", "0.1", "1.0.0rc1", "1.0.0", "1.0.1.dev0", "1.0.1", "v2"]
    assert sorted(reversed(ordered), key=version_key) == ordered


@given(triples, triples)
def test_release_versions_order_as_their_numbers(a: Triple, b: Triple) -> None:
    assert (version_key(text(a)) < version_key(text(b))) == (a < b)
