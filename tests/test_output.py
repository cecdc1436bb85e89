"""A command's output as shown (engine.output): lines split across chunks, secrets and URL
credentials masked, the step's prefix, and the tail kept for the error message."""

from __future__ import annotations

from builder.engine.output import relay


def test_lines_are_split_across_chunks_masked_and_prefixed() -> None:
    shown: list[str] = []
    chunks = [b"one\r\ntw", b"o has s3cret\nhttps://user:pw@host/x\n", b"no newline at the end"]
    tail = relay(chunks, "step", shown.append, ["s3cret"], quiet=False, max_output=None)
    assert list(tail) == ["one", "two has ***", "https://***@host/x", "no newline at the end"]
    assert shown == [f"[step] {line}" for line in tail]


def test_quiet_shows_nothing_and_keeps_only_the_tail() -> None:
    shown: list[str] = []
    tail = relay([b"".join(b"%d\n" % i for i in range(10))], "s", shown.append, [], quiet=True, max_output=3)
    assert shown == [] and list(tail) == ["7", "8", "9"]
