"""Hypothesis strategies shared by the fuzz tests: release tags, valid and near-valid; and the
tally every fuzz test keeps of what it saw."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

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


@dataclass
class Tally:
    """What a fuzz test saw: inputs refused, ignored, accepted, and every crash."""

    counts: Counter[str] = field(default_factory=Counter)
    crashes: list[str] = field(default_factory=list)

    def crash(self, text: str) -> None:
        self.counts["crashed"] += 1
        self.crashes.append(text[:300])

    def report(self, title: str, *, refused: str = "refused", ignored: bool = False, both_sides: bool = True) -> None:
        """Print the counts as a FIGURE line; fail on any crash, or (`both_sides`) when refusal or
        acceptance never happened."""
        parts = [f"{refused} {self.counts['refused']}"] + ([f"ignored {self.counts['ignored']}"] if ignored else [])
        parts += [f"accepted {self.counts['accepted']}", f"crashed {self.counts['crashed']}"]
        print(f"\nFIGURE {title}: {' / '.join(parts)}")
        assert not self.crashes, self.crashes[:5]
        assert not both_sides or (self.counts["refused"] and self.counts["accepted"]), (
            f"refusal or acceptance never happened: {dict(self.counts)}"
        )
