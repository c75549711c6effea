"""Named, independent random streams derived from one clip seed.

Each part of a case (probe, wall, lesions, per-frame noise...) draws from its own stream, keyed by
a fixed name, so adding a feature never shifts the draws of another part and any frame can be
re-rendered on its own: the same seed gives the same case and bit-identical frames on any run.
"""

from __future__ import annotations

import zlib

import numpy as np


def stream_rng(seed: int, name: str, *index: int) -> np.random.Generator:
    """A generator for one named part of a case.

    Args:
        seed: the clip seed (any non-negative int).
        name: the part, e.g. ``"probe"``, ``"lesions"``, ``"frame-noise"``.
        *index: further non-negative integers (frame index, layer index, ...).

    Returns:
        A PCG64 generator whose stream depends only on ``(seed, name, *index)``.
    """
    key = [int(seed) & 0xFFFFFFFF, int(seed) >> 32, zlib.crc32(name.encode())]
    key.extend(int(i) & 0xFFFFFFFFFFFF for i in index)
    return np.random.default_rng(np.random.SeedSequence(key))
