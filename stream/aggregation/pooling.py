"""Frame -> lesion pooling of class probabilities: log-odds pooling and attention weighting.

Both take per-frame probability vectors of one track and per-frame evidence weights
(``frame quality score x detection confidence``, see :func:`evidence_weights`).

* **log-odds pooling** (a normalised logarithmic opinion pool): ``log p = sum_i a_i log p_i``
  with ``a_i = w_i / sum w``, renormalised. Equivalent to averaging each class's log-odds
  against a reference class. Weights are normalised because successive frames of one lesion are
  strongly correlated: summing the log-odds (naive Bayes) would be absurdly over-confident.
* **attention weighting** (a linear pool with softmax weights): ``p = sum_i a_i p_i`` with
  ``a = softmax(sharpness * (log w_i - H(p_i)))``: frames with more evidence and a more decided
  prediction (low entropy ``H``) count more; ``sharpness`` -> 0 gives the plain weighted mean.

The aggregator uses ``method`` from its config; ``benchmarks/eval_findings.py`` compares them.
"""

from __future__ import annotations

import numpy as np

from sonoflow.stream.aggregation.errors import AggregationError

METHODS = ("log_odds", "attention")
_EPS = 1e-6


def evidence_weights(quality_scores: np.ndarray, confidences: np.ndarray,
                     floor: float = 1e-3) -> np.ndarray:
    """Per-frame evidence weight ``quality x confidence``, clipped to ``[floor, 1]``.

    Args:
        quality_scores: ``(N,)`` frame quality in [0, 1] (1.0 where no quality stage ran).
        confidences: ``(N,)`` detection confidence in [0, 1].
        floor: smallest weight, so a track seen only on poor frames still gets a result.

    Returns:
        ``(N,)`` float64 weights.
    """
    q = np.clip(np.asarray(quality_scores, dtype=np.float64), 0.0, 1.0)
    c = np.clip(np.asarray(confidences, dtype=np.float64), 0.0, 1.0)
    return np.clip(q * c, floor, 1.0)


def _check(probs: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if p.ndim != 2 or w.shape != (p.shape[0],) or p.shape[0] == 0:
        raise AggregationError(f"pooling needs probs (N, C) with N >= 1 and weights (N,); got "
                         f"{p.shape} and {w.shape}")
    return np.clip(p, _EPS, 1.0), np.clip(w, 0.0, None)


def log_odds_pool(probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Normalised logarithmic opinion pool.

    Args:
        probs: ``(N, C)`` per-frame class probabilities (rows sum to 1).
        weights: ``(N,)`` non-negative evidence weights.

    Returns:
        ``(C,)`` pooled probabilities summing to 1.

    Raises:
        AggregationError: shapes do not match or N == 0.
    """
    p, w = _check(probs, weights)
    a = w / w.sum() if w.sum() > 0 else np.full(len(w), 1.0 / len(w))
    logp = (a[:, None] * np.log(p)).sum(axis=0)
    out = np.exp(logp - logp.max())
    return out / out.sum()


def attention_pool(probs: np.ndarray, weights: np.ndarray, sharpness: float = 4.0) -> np.ndarray:
    """Linear pool with softmax attention over evidence and certainty.

    Args:
        probs: ``(N, C)`` per-frame class probabilities (rows sum to 1).
        weights: ``(N,)`` non-negative evidence weights.
        sharpness: inverse temperature of the attention softmax.

    Returns:
        ``(C,)`` pooled probabilities summing to 1.

    Raises:
        AggregationError: shapes do not match or N == 0.
    """
    p, w = _check(probs, weights)
    p = p / p.sum(axis=1, keepdims=True)
    entropy = -(p * np.log(p)).sum(axis=1) / np.log(max(p.shape[1], 2))  # in [0, 1]
    score = sharpness * (np.log(np.clip(w, _EPS, None)) - entropy)
    a = np.exp(score - score.max())
    a /= a.sum()
    out = (a[:, None] * p).sum(axis=0)
    return out / out.sum()


def pool(probs: np.ndarray, weights: np.ndarray, method: str) -> np.ndarray:
    """Dispatch to :func:`log_odds_pool` or :func:`attention_pool` by name.

    Raises:
        AggregationError: unknown ``method`` (expected one of :data:`METHODS`).
    """
    if method == "log_odds":
        return log_odds_pool(probs, weights)
    if method == "attention":
        return attention_pool(probs, weights)
    raise AggregationError(f"unknown pooling method {method!r}; expected one of {METHODS}")


def pool_binary(p_positive: np.ndarray, weights: np.ndarray, method: str) -> float:
    """Pool independent binary probabilities (malignancy, one feature label) over frames.

    Args:
        p_positive: ``(N,)`` probability of the positive label per frame.
        weights: ``(N,)`` evidence weights.
        method: one of :data:`METHODS`.

    Returns:
        The pooled probability of the positive label.
    """
    p = np.clip(np.asarray(p_positive, dtype=np.float64), 0.0, 1.0)
    return float(pool(np.stack([p, 1.0 - p], axis=1), weights, method)[0])
