"""The wire format: round trips, read-only views, rejection of bad headers, and a plain
msgpack + pyzmq consumer written from the wire description alone."""

from __future__ import annotations

import msgpack
import msgspec
import numpy as np
import pytest
import zmq

from sonoflow.stream import messages as m
from sonoflow.stream.errors import WireError


def _frame(**kw) -> m.FrameHeader:
    base = dict(stream_id="clip", seq=7, frame_index=7, pts=7000, time_base=(1, 30000),
                capture_ns=123456789, pixel_format="gray8", pixel_spacing_mm=(0.3, 0.3),
                spacing_source="simulator")
    base.update(kw)
    return m.FrameHeader(**base)


HEADERS = [
    _frame(quality=m.QualityResult(score=0.8, flags=["frozen"], metrics={"sharp": 1.0}),
           infer=m.InferResult(detections=[m.Detection(xyxy_px=(1, 2, 30, 40), confidence=0.9,
                                                       label="cyst", class_probs={"cyst": 0.9},
                                                       track_id=3, mask_id=1)])),
    m.LesionHeader(stream_id="clip", seq=9, lesion=m.LesionSummary(
        lesion_id=1, first_frame=0, last_frame=9, best_frame=4, xyxy_px=(1, 2, 3, 4),
        long_axis_mm=12.0, short_axis_mm=8.0, label="hcc", class_probs={"hcc": 0.7},
        malignancy=0.7, features={"halo_target": 0.6})),
    m.CaseHeader(stream_id="clip", case={"schema": "sonoflow.case/1", "lesions": []}),
    m.EosHeader(stream_id="clip", last_seq=99, frames_total=100),
    m.ErrorHeader(stream_id="clip", seq=3, stage="infer", error_type="ValueError",
                  message="bad"),
]


@pytest.mark.parametrize("header", HEADERS, ids=lambda h: type(h).__name__)
def test_round_trip_every_kind(header):
    arrays = {}
    if isinstance(header, (m.FrameHeader, m.CaseHeader)):
        arrays = {"image": np.arange(480 * 640, dtype=np.uint32).astype(np.uint8).reshape(480, 640),
                  "mask": np.ones((4, 5, 3), np.float32)}
    frames = m.encode(m.Packet(header, arrays))
    assert frames[0] == f"{m.Packet(header).kind}/clip".encode()
    back = m.decode([bytes(f) for f in frames])
    assert type(back.header) is type(header)
    assert msgspec.to_builtins(back.header) == msgspec.to_builtins(header)
    for k, a in arrays.items():
        np.testing.assert_array_equal(back.arrays[k], a)
        assert back.arrays[k].dtype == a.dtype
        assert not back.arrays[k].flags.writeable, "received arrays must be read-only"


def test_received_arrays_cannot_be_mutated():
    p = m.decode(m.encode(m.Packet(_frame(), {"image": np.zeros((4, 4), np.uint8)})))
    with pytest.raises(ValueError):
        p.arrays["image"][0, 0] = 1


def test_non_contiguous_arrays_are_sent_contiguous():
    a = np.arange(100, dtype=np.uint8).reshape(10, 10)[:, ::2]
    back = m.decode(m.encode(m.Packet(_frame(), {"image": a})))
    np.testing.assert_array_equal(back.arrays["image"], a)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(schema="sonoflow.frame/2"), "unknown schema version"),
    (lambda d: d.update(kind="video"), "unknown packet kind"),
    (lambda d: d.pop("seq"), "malformed header"),
    (lambda d: d.update(seq="seven"), "malformed header"),
])
def test_bad_headers_are_rejected_clearly(mutate, message):
    frames = m.encode(m.Packet(_frame(), {}))
    d = msgpack.unpackb(frames[1])
    mutate(d)
    with pytest.raises(WireError, match=message):
        m.decode([frames[0], msgpack.packb(d)])


def test_garbage_and_wrong_frame_counts_are_rejected():
    with pytest.raises(WireError, match="not msgpack"):
        m.decode([b"frame/clip", b"\xc1\xc1\xc1"])
    with pytest.raises(WireError, match="expected \\[topic, header"):
        m.decode([b"frame/clip"])
    frames = m.encode(m.Packet(_frame(), {"image": np.zeros((2, 2), np.uint8)}))
    with pytest.raises(WireError, match="buffer"):
        m.decode(frames[:2])
    with pytest.raises(WireError, match="bytes"):
        m.decode([frames[0], frames[1], b"abc"])
    with pytest.raises(WireError, match="topic"):
        m.decode([b"frame/other", frames[1], frames[2]])


def test_object_arrays_cannot_go_on_the_wire():
    with pytest.raises(WireError, match="dtype"):
        m.encode(m.Packet(_frame(), {"image": np.array([{"a": 1}], dtype=object)}))


def test_plain_pyzmq_msgpack_consumer_decodes_our_packets():
    """Written from DESIGN.md's wire description only: no sonoflow decoder involved."""
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port}")
    img = (np.arange(48 * 64) % 251).astype(np.uint8).reshape(48, 64)
    push.send_multipart(m.encode(m.Packet(_frame(seq=41), {"image": img})), copy=False)
    topic, header, *bufs = pull.recv_multipart()
    h = msgpack.unpackb(header)
    assert topic.split(b"/") == [b"frame", b"clip"]
    assert h["kind"] == "frame" and h["schema"] == "sonoflow.frame/1" and h["seq"] == 41
    spec = h["buffers"][0]
    arr = np.frombuffer(bufs[spec["index"]], dtype=spec["dtype"]).reshape(spec["shape"])
    np.testing.assert_array_equal(arr, img)
    for s in (push, pull):
        s.close(linger=0)
    ctx.term()
