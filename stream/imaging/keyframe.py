"""Key-frame policy: which frames go on to ``infer``, and why the others do not.

Policies (config ``policy``):

* ``"all"``: every frame that passes the hard quality gate;
* ``"every_n"``: every ``n``-th captured frame (counted from the stream's first frame), the
  others are *dropped* by policy; kept ones still pass the hard gate;
* ``"threshold"``: frames whose quality score is at least ``threshold``.

The hard gate, under every policy: a frame carrying one of ``reject_flags`` (by default
``frozen``, ``black``, ``no_contact``: nothing new or nothing to see) is *rejected*. Rejected
and dropped frames are counted downstream, never silently skipped, and ``reason`` says why.
"""

from __future__ import annotations

from dataclasses import dataclass

from sonoflow.stream.errors import ConfigError

POLICIES = ("all", "every_n", "threshold")
DEFAULT_REJECT_FLAGS = ("frozen", "black", "no_contact")


@dataclass(frozen=True)
class Decision:
    """``status`` is "pending" for key frames (``infer`` decides later), else "rejected" or
    "dropped"; ``reason`` is empty for key frames."""

    keyframe: bool
    status: str
    reason: str


def _ordinal(n: int) -> str:
    if 10 <= n % 100 <= 20:
        suffix = "th"
    else:
        suffix = {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


class KeyframePolicy:
    """Decides per frame. Stateless apart from its config.

    Args:
        policy: one of :data:`POLICIES`.
        n: period of ``"every_n"`` (>= 1).
        threshold: minimum score of ``"threshold"``, in [0, 1].
        reject_flags: flags that reject a frame under every policy.

    Raises:
        ConfigError: unknown policy, ``n`` < 1, threshold outside [0, 1].
    """

    def __init__(self, policy: str = "threshold", n: int = 1, threshold: float = 0.5,
                 reject_flags: tuple[str, ...] | list[str] = DEFAULT_REJECT_FLAGS):
        if policy not in POLICIES:
            raise ConfigError(f"quality: policy {policy!r} unknown; expected one of {POLICIES}")
        if not isinstance(n, int) or n < 1:
            raise ConfigError(f"quality: n must be an integer >= 1, got {n!r}")
        if not 0.0 <= float(threshold) <= 1.0:
            raise ConfigError(f"quality: threshold must lie in [0, 1], got {threshold!r}")
        self.policy, self.n, self.threshold = policy, n, float(threshold)
        self.reject_flags = tuple(reject_flags)

    def decide(self, frame_number: int, score: float, flags: list[str]) -> Decision:
        """Decide one frame.

        Args:
            frame_number: 0-based count of frames this stream has seen so far.
            score: quality score in [0, 1].
            flags: quality flags of the frame.
        """
        if self.policy == "every_n" and frame_number % self.n != 0:
            return Decision(False, "dropped", f"policy: every {_ordinal(self.n)} frame")
        hard = [f for f in flags if f in self.reject_flags]
        if hard:
            return Decision(False, "rejected", ", ".join(hard))
        if self.policy == "threshold" and score < self.threshold:
            return Decision(False, "rejected",
                            f"low quality {score:.2f} < {self.threshold:.2f}")
        return Decision(True, "pending", "")
