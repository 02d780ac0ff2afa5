"""Regular expressions from a manifest: compiled once, refused if they can backtrack catastrophically.

Python's `re` is a backtracking engine that cannot be interrupted: a pattern
like `(a+)+b` takes exponential time on `aaaa…a`, and a thread cannot stop
it (a fault battery saw 11 s for one tag). A manifest's patterns are
therefore checked when the manifest is loaded, in two steps:

1. **Static, sound against exponential blow-up.** Exponential backtracking
   needs a loop whose body can match the same text in more than one way
   (nested quantifiers `(a+)+`, quantified alternation `(a|ab)*`, `(a?a)*`).
   A loop (a quantifier with a maximum above 1) is accepted only if its body
   is deterministic: a sequence of single-character items and fixed groups
   with no quantifier and no alternation, or a *delimited* sequence
   `c X*` / `c X+` / `c X{m,n}` whose first item is a literal character `c`
   that nothing else in the body can match (so each iteration starts at a
   `c` and has one way to succeed: `(\\.[0-9]+)*` is fine). Back-references,
   lookarounds and conditional groups are refused: a tag never needs them.
   A pattern that passes has no exponential case; what is left is
   polynomial (adjacent quantifiers over the same characters, `a*a*a*`).
2. **Measured, for the polynomial rest.** The tag grammar bounds a tag to
   100 ASCII characters, so a polynomial pattern is only a problem if its
   degree is high. The extra-class pattern is run against adversarial
   grammar-valid tags of the maximum length in a child process with a
   deadline (`PROBE_SECONDS`); a pattern that does not finish is refused.
   The child can be killed, which a thread could not.

Patterns are matched with `fullmatch` (extra tags) and compiled with
`re.ASCII`, so `\\d` is `[0-9]`.
"""

from __future__ import annotations

import functools
import importlib
import json
import re
import subprocess
import sys
from typing import Any

_parser: Any = importlib.import_module("re._parser")
_constants: Any = importlib.import_module("re._constants")

MAX_PATTERN_LENGTH = 500
PROBE_SECONDS = 3.0
PROBE_LENGTH = 100

_OP = _constants
_LOOPS = {_OP.MAX_REPEAT, _OP.MIN_REPEAT, _OP.POSSESSIVE_REPEAT}
_SINGLE = {_OP.LITERAL, _OP.NOT_LITERAL, _OP.ANY, _OP.IN}
_REFUSED = {
    _OP.GROUPREF: "back-references",
    _OP.GROUPREF_EXISTS: "conditional groups",
    _OP.ASSERT: "lookarounds",
    _OP.ASSERT_NOT: "lookarounds",
}


class UnsafePattern(ValueError):
    """The pattern does not compile, or could backtrack catastrophically; the message says why."""


@functools.lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """The compiled pattern (cached); raises `UnsafePattern` for bad or catastrophic ones."""
    if not isinstance(pattern, str):
        raise UnsafePattern("a pattern must be text")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise UnsafePattern(f"is longer than {MAX_PATTERN_LENGTH} characters")
    if "\x00" in pattern:
        raise UnsafePattern("contains a NUL byte")
    try:
        compiled = re.compile(pattern, re.ASCII)
        tree = _parser.parse(pattern, re.ASCII)
    except (re.error, OverflowError, RecursionError) as exc:
        raise UnsafePattern(f"is not a regular expression: {exc}") from exc
    _check_items(list(tree), compiled.flags)
    return compiled


def _check_items(items: list[tuple[Any, Any]], flags: int) -> None:
    for op, av in items:
        if op in _REFUSED:
            raise UnsafePattern(f"uses {_REFUSED[op]}, which dropship patterns do not support")
        if op in _LOOPS:
            _low, high, body = av
            if high > 1:
                _check_loop_body(list(body), flags)
            _check_items(list(body), flags)
        elif op == _OP.SUBPATTERN:
            _check_items(list(av[-1]), flags)
        elif op == _OP.ATOMIC_GROUP:
            _check_items(list(av), flags)
        elif op == _OP.BRANCH:
            for branch in av[1]:
                _check_items(list(branch), flags)


def _flatten(items: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Non-capturing and capturing groups without their own flags, opened."""
    flat: list[tuple[Any, Any]] = []
    for op, av in items:
        if op == _OP.SUBPATTERN and not av[1] and not av[2]:
            flat.extend(_flatten(list(av[-1])))
        else:
            flat.append((op, av))
    return flat


def _check_loop_body(body: list[tuple[Any, Any]], flags: int) -> None:
    nested = "a quantified group may contain no quantifier or alternation, except a delimited one like (\\.[0-9]+)*"
    items = _flatten(body)
    loops = [(op, av) for op, av in items if op in _LOOPS]
    if any(op not in _SINGLE and op not in _LOOPS and op != _OP.AT for op, _ in items):
        raise UnsafePattern(f"could backtrack catastrophically: {nested}")
    if not loops:
        return
    first_op, first_av = items[0]
    if (
        len(loops) != 1
        or first_op != _OP.LITERAL
        or any(op not in _SINGLE for op, av in loops[0][1][2])
        or len(loops[0][1][2]) != 1
    ):
        raise UnsafePattern(f"could backtrack catastrophically: {nested}")
    delimiter = chr(first_av)
    for op, av in items[1:]:
        singles = av[2] if op in _LOOPS else [(op, av)]
        for single in singles:
            if _can_match(single, delimiter, flags):
                raise UnsafePattern(
                    f"could backtrack catastrophically: in a quantified group starting with {delimiter!r}, "
                    f"nothing else may match {delimiter!r}"
                )


def _can_match(item: tuple[Any, Any], char: str, flags: int) -> bool:
    """Whether a single-character item could match `char` (in any case, to be safe)."""
    candidates = {char, char.lower(), char.upper()}
    op, av = item
    if op == _OP.LITERAL:
        return chr(av) in candidates or bool(flags & re.IGNORECASE and chr(av).lower() == char.lower())
    if op in (_OP.NOT_LITERAL, _OP.ANY):
        return True
    if op == _OP.IN:
        return any(_in_set(list(av), c) for c in candidates) or bool(flags & re.IGNORECASE)
    return True


def _in_set(entries: list[tuple[Any, Any]], char: str) -> bool:
    negate = False
    hit = False
    code = ord(char)
    for op, av in entries:
        if op == _OP.NEGATE:
            negate = True
        elif op == _OP.LITERAL:
            hit |= av == code
        elif op == _OP.RANGE:
            hit |= av[0] <= code <= av[1]
        elif op == _OP.CATEGORY:
            name = str(av)
            probe = {"DIGIT": r"\d", "WORD": r"\w", "SPACE": r"\s"}
            for key, cls in probe.items():
                if key in name:
                    inside = bool(re.fullmatch(cls, char, re.ASCII))
                    hit |= (not inside) if "NOT" in name else inside
        else:
            hit = True  # unknown set entry: assume the worst
    return hit != negate


def adversarial_tags(length: int = PROBE_LENGTH) -> list[str]:
    """Grammar-valid tags of about `length` characters that make a backtracking pattern work hardest."""
    tags: list[str] = []
    for sep in ("-", "+"):
        stem = f"v1.0.0{sep}"
        room = length - len(stem)
        for unit in ("a", "1", "A", "z", "a1", "a.", "1.a", "rc", "Z9"):
            body = (unit * room)[:room].strip(".")
            body = re.sub(r"\.+", ".", body)
            for tail in ("", ".x", ".0", "a", "-"):
                text = (body[: room - len(tail)] + tail).strip(".").replace("..", ".")
                tags.append(stem + text)
    tags.append("v" + "1" * 9 + "." + "1" * 9 + "." + "1" * 9 + "-" + "a" * 70)
    return tags


_PROBE = (
    "import json, re, sys\n"
    "pattern, tags = json.load(sys.stdin)\n"
    "compiled = re.compile(pattern, re.ASCII)\n"
    "for tag in tags:\n"
    "    compiled.fullmatch(tag)\n"
    "    compiled.search(tag)\n"
    "print('done')\n"
)


@functools.lru_cache(maxsize=64)
def probe_pattern(pattern: str, seconds: float = PROBE_SECONDS) -> None:
    """Run the pattern on adversarial tags in a child process; `UnsafePattern` if it misses the deadline."""
    compile_pattern(pattern)
    payload = json.dumps([pattern, adversarial_tags()])
    try:
        result = subprocess.run(
            [sys.executable, "-I", "-c", _PROBE],
            input=payload,
            capture_output=True,
            text=True,
            timeout=seconds,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise UnsafePattern(
            f"took more than {seconds:g} s on a {PROBE_LENGTH}-character tag (catastrophic backtracking): "
            "avoid adjacent quantifiers over the same characters"
        ) from exc
    if result.returncode != 0 or result.stdout.strip() != "done":
        raise UnsafePattern(f"could not be tried on sample tags: {result.stderr.strip().splitlines()[-1:]}")
