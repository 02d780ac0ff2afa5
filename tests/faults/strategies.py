"""Hypothesis strategies shared by the fuzz tests: release tags, valid and near-valid."""

from __future__ import annotations

from hypothesis import strategies as st

from dropship.tags import TAG_GRAMMAR

TRICKY = list("0123456789.-+_~ /\n\t\x00vV") + ["١", "１", "३", "٠", "\u200b", "é", "ß", "\ufeff", "..", "v01", "rc"]

valid_tags = st.from_regex(TAG_GRAMMAR, fullmatch=True).filter(lambda t: len(t) <= 100)


@st.composite
def near_valid(draw: st.DrawFn) -> str:
    """A valid tag with one to three edits from characters that broke the old check."""
    tag = draw(valid_tags)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(tag)))
        piece = draw(st.sampled_from(TRICKY) | st.characters())
        match draw(st.sampled_from(["insert", "replace", "delete"])):
            case "insert":
                tag = tag[:at] + piece + tag[at:]
            case "replace":
                tag = tag[:at] + piece + tag[at + 1 :]
            case "delete":
                tag = tag[:at] + tag[at + 1 :]
    return tag


tags = st.one_of(st.text(max_size=120), valid_tags, near_valid())
