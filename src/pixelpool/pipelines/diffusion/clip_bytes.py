"""The byte -> printable character table that CLIP's byte-level BPE works on (torch-free)."""

from __future__ import annotations


def bytes_to_unicode() -> dict[int, str]:
    """The byte -> printable character table that CLIP's BPE works on."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))
