"""A stage that forwards packets unchanged (transport benchmarks, tests, placeholders in
pipeline files while a stage is being swapped)."""

from __future__ import annotations

import time

from sonoflow.stream.messages import Packet
from sonoflow.stream.stage import Stage


class PassThrough(Stage):
    """Forwards every packet. ``work_ms`` busy-waits to emulate a stage's compute (tests);
    ``fail_every`` raises on every Nth frame (error-policy tests); ``hang_at_seq`` blocks
    forever on that seq (watchdog tests)."""

    key = "passthrough"
    defaults = {"work_ms": 0.0, "sleep_ms": 0.0, "fail_every": 0, "hang_at_seq": -1,
                "exit_at_seq": -1}

    def process(self, packet: Packet) -> Packet:
        seq = packet.header.seq
        if self.config["fail_every"] and seq % self.config["fail_every"] == 0:
            raise ValueError(f"injected failure at seq {seq}")
        if seq == self.config["hang_at_seq"]:
            while True:
                time.sleep(1)
        if seq == self.config["exit_at_seq"]:
            import os

            os._exit(17)  # emulate a crash (killed process), only used in process mode tests
        if self.config["work_ms"]:
            end = time.perf_counter() + self.config["work_ms"] / 1e3
            while time.perf_counter() < end:
                pass
        if self.config["sleep_ms"]:
            time.sleep(self.config["sleep_ms"] / 1e3)
        return packet
