"""The example's Python side: greets like the C program does."""

from hello_dropship._version import VERSION


def greeting() -> str:
    return f"Hello from dropship {VERSION}!"
