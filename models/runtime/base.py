"""The runtime protocol every inference backend implements.

A :class:`Runtime` runs one model artifact on one backend at one precision. It never changes
what it was asked for: a backend or precision that cannot run here raises
:class:`~sonoflow.models.errors.BackendUnavailable` with the reason.
"""

from __future__ import annotations

import abc

import numpy as np

from sonoflow.models.card import ModelCard
from sonoflow.models.errors import InputContractError

BACKENDS = ("ort-cpu", "ort-cuda", "ort-tensorrt", "tensorrt", "torch")


class Runtime(abc.ABC):
    """One loaded model. Use as a context manager or call :meth:`close`.

    Attributes:
        card: the model card of the artifact.
        backend: the backend word (``"ort-cpu"``, ...), as used in config, CLI and logs.
        precision: ``"fp32"`` | ``"fp16"`` | ``"int8"``: what actually runs.
        input_names: model input names, in order.
        output_names: model output names, in order.
    """

    backend: str = ""

    def __init__(self, card: ModelCard, precision: str, input_names: list[str],
                 output_names: list[str]):
        self.card = card
        self.precision = precision
        self.input_names = list(input_names)
        self.output_names = list(output_names)

    @abc.abstractmethod
    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model.

        Args:
            inputs: input name -> array, matching the card's input contract
                (float32 NCHW; the batch may vary where the card's batch dim is <= 0).

        Returns:
            output name -> array (float32 unless the card says otherwise).

        Raises:
            InputContractError: a missing/unknown input or a wrong dtype/shape.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release the session/engine. Safe to call twice."""

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def check_inputs(self, inputs: dict[str, np.ndarray]) -> None:
        """Check ``inputs`` against the card's contract.

        Raises:
            InputContractError: names, dtype, rank or non-batch dims differ (expected vs actual).
        """
        if set(inputs) != set(self.input_names):
            raise InputContractError(
                f"{self.card.id}: inputs {sorted(inputs)} but the model takes "
                f"{self.input_names} (card {self.card.artifact_name})")
        spec = self.card.input
        arr = inputs[spec.name] if spec.name in inputs else next(iter(inputs.values()))
        if arr.dtype != np.dtype(spec.dtype):
            raise InputContractError(f"{self.card.id}: input {spec.name!r} dtype {arr.dtype}, "
                                     f"expected {spec.dtype}; normalise as the card says")
        expected = list(spec.shape)
        actual = list(arr.shape)
        batch_ok = expected[0] <= 0 or actual[:1] == expected[:1]
        if len(actual) != len(expected) or actual[1:] != expected[1:] or not batch_ok:
            raise InputContractError(f"{self.card.id}: input {spec.name!r} shape {actual}, "
                                     f"expected {expected} ({spec.layout}, batch dim <= 0 = any)")


def require_precision(card: ModelCard, precision: str | None, backend: str, where: str) -> str:
    """The precision to run: the artifact's own, which must equal the one asked for.

    ONNX Runtime and torch run an artifact at the precision it was exported in; they do not
    convert. Asking for another precision is an error, never a silent substitution.

    Raises:
        BackendUnavailable: ``precision`` is given and differs from ``card.precision``.
    """
    from sonoflow.models.errors import BackendUnavailable

    if precision is None or precision == card.precision:
        return card.precision
    raise BackendUnavailable(
        f"{where}: backend {backend!r} runs the artifact's own precision ({card.precision}); "
        f"{precision} was asked for. Load the {card.id}-{precision}.onnx artifact "
        f"(sonoflow.models.registry.resolve({card.id!r}, {precision!r})) or export it with "
        f"`sonoflow export`")
