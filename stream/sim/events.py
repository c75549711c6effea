"""Quality events of a clip: frozen runs, black frames, lost contact, gain jumps, motion blur.

Events are planned per block of frames from the clip seed (so an endless live source gets
fresh events in every block and a finite clip always gets the same ones). Each planned event
gets its own time slot inside the block; a persisting gain step may overlap later slots, and
the frame's quality label then follows :data:`config.QUALITY_PRECEDENCE`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sonoflow.stream.sim import config
from sonoflow.stream.sim.seeding import stream_rng

#: Frames per planning block of an endless clip.
BLOCK_FRAMES = 300


@dataclass(frozen=True)
class FrameEvents:
    """What happens to one frame.

    Attributes:
        frozen: repeat the previous output frame bit for bit.
        black: an all-zero frame (video dropout / mode switch).
        lost_fraction: fraction of scan lines without probe contact (0..1).
        lost_side: -1 contact lost from the left edge, +1 from the right.
        gain_offset_db: gain change vs the clip's baseline.
        jerk_mm: lateral jerk displacement (motion blur); blur_lines: lateral blur length.
    """

    frozen: bool = False
    black: bool = False
    lost_fraction: float = 0.0
    lost_side: int = 1
    gain_offset_db: float = 0.0
    jerk_mm: float = 0.0
    blur_lines: int = 0

    def quality_label(self) -> str:
        """The frame's quality label ("good" or the first fault in precedence order)."""
        faults = {
            "black": self.black,
            "frozen": self.frozen,
            "no_contact": self.lost_fraction > config.NO_CONTACT_FRACTION,
            "partial_contact": 0.0 < self.lost_fraction <= config.NO_CONTACT_FRACTION,
            "motion_blur": self.blur_lines > 0,
            "too_bright": self.gain_offset_db > config.GAIN_FAULT_DB,
            "too_dark": self.gain_offset_db < -config.GAIN_FAULT_DB,
        }
        for name in config.QUALITY_PRECEDENCE:
            if faults[name]:
                return name
        return "good"


def _choose(case, rng) -> list[str]:
    if case.events is False:
        return []
    if case.events is not True:
        return list(case.events)
    p = config.EVENT_PROBABILITIES
    out = []
    if rng.random() < p["frozen"]:
        out.append("frozen")
    if rng.random() < p["contact"]:
        out.append("no_contact" if rng.random() < 0.5 else "partial_contact")
    if rng.random() < p["gain"]:
        out.append("too_bright" if rng.random() < 0.5 else "too_dark")
    if rng.random() < p["black"]:
        out.append("black")
    if rng.random() < p["motion_blur"]:
        out.append("motion_blur")
    return out


def plan_block(case, block: int, n_frames: int) -> list[FrameEvents]:
    """Events of one block of ``n_frames`` frames.

    Args:
        case: the case (its ``events`` setting and seed).
        block: block number (0 for a finite clip).
        n_frames: frames in the block.

    Returns:
        One :class:`FrameEvents` per frame.
    """
    rng = stream_rng(case.seed, "events", block)
    kinds = _choose(case, rng)
    rng.shuffle(kinds)
    ev = [dict() for _ in range(n_frames)]
    if not kinds or n_frames < 4:
        return [FrameEvents() for _ in range(n_frames)]
    first = 1 if block == 0 else 0  # frame 0 of a clip is always rendered
    slot = (n_frames - first) / len(kinds)
    gain_after: tuple[int, float] | None = None
    for i, kind in enumerate(kinds):
        a = first + int(i * slot)
        b = first + int((i + 1) * slot)
        span = max(1, b - a)
        if kind == "frozen":
            n = min(span, int(rng.integers(2, 6)))
            s = a + int(rng.integers(0, max(1, span - n + 1)))
            s = max(s, 1)
            for f in range(s, min(s + n, n_frames)):
                ev[f]["frozen"] = True
        elif kind == "black":
            n = min(span, int(rng.integers(1, 4)))
            s = a + int(rng.integers(0, max(1, span - n + 1)))
            for f in range(s, min(s + n, n_frames)):
                ev[f]["black"] = True
        elif kind == "no_contact":
            n = min(span, max(6, int(rng.integers(10, 31))))
            s = a + int(rng.integers(0, max(1, span - n + 1)))
            side = int(rng.choice([-1, 1]))
            for j in range(n):
                if s + j >= n_frames:
                    break
                x = j / max(n - 1, 1)
                frac = 0.3 + 0.7 * (x / 0.4) if x < 0.4 else (
                    1.0 if x < 0.6 else 1.0 - 0.8 * (x - 0.6) / 0.4)
                ev[s + j]["lost_fraction"] = float(min(1.0, frac))
                ev[s + j]["lost_side"] = side
        elif kind == "partial_contact":
            n = min(span, int(rng.integers(10, 41)))
            s = a + int(rng.integers(0, max(1, span - n + 1)))
            side = int(rng.choice([-1, 1]))
            frac = float(rng.uniform(0.2, 0.45))
            for f in range(s, min(s + n, n_frames)):
                ev[f]["lost_fraction"] = frac
                ev[f]["lost_side"] = side
        elif kind in ("too_bright", "too_dark"):
            step = float(rng.uniform(10.0, 20.0)) * (1 if kind == "too_bright" else -1)
            s = a + int(rng.integers(0, max(1, span // 2)))
            gain_after = (s, step)
        elif kind == "motion_blur":
            n = min(span, int(rng.integers(3, 9)))
            s = a + int(rng.integers(0, max(1, span - n + 1)))
            direction = float(rng.choice([-1.0, 1.0]))
            speed = float(rng.uniform(2.5, 5.0))
            for j in range(n):
                if s + j >= n_frames:
                    break
                ev[s + j]["jerk_mm"] = direction * min(speed * (j + 1), 25.0)
                ev[s + j]["blur_lines"] = int(rng.integers(7, 19))
    if gain_after is not None:
        s, step = gain_after
        for f in range(s, n_frames):
            ev[f]["gain_offset_db"] = step * min(1.0, (f - s + 1) / 3.0)
    return [FrameEvents(**e) for e in ev]
