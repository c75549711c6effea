"""US LI-RADS v2017 category, visualization score and the follow-up each category implies.

The rules (ACR US LI-RADS v2017; Rodgers et al., "Role of US LI-RADS in the LI-RADS
Algorithm", Radiographics 2019;39:690-708, PMC6542628):

* **US-1 negative**: no observation, or only definitely benign observations.
  Follow-up: repeat ultrasound in 6 months (routine surveillance).
* **US-2 subthreshold**: an observation < 10 mm that is not definitely benign.
  Follow-up: repeat ultrasound in 3 months.
* **US-3 positive**: an observation >= 10 mm that is not definitely benign (or a new thrombus in
  a vein, which this product does not detect). Follow-up: multiphase contrast-enhanced CT or MRI.
* **Visualization score** A (no or minimal limitations), B (moderate), C (severe): communicates
  the expected sensitivity of the study; it does not change the category or the management.

The study category is the highest category over its observations. What this module adds, and
says so in its output:

* **abstain** (category ``None``) when fewer than ``min_good_frames`` frames of good quality
  were seen and nothing positive was found (the study cannot support a negative or a
  subthreshold result: a larger observation may have gone unseen), or when a
  not-definitely-benign observation exists but the image is uncalibrated (the 10 mm threshold
  cannot be applied). A US-3 observation seen on the few good frames stands
  (``positive_overrides_few_frames``): poor visualization lowers sensitivity, not the
  meaning of what was seen, and US-3's follow-up (CT or MRI) is already the strongest;
* an observation is "definitely benign" when the pooled probability of the benign classes
  reaches ``benign_min_prob`` and its pooled malignancy stays below ``benign_max_malignancy``.

Every threshold lives in :class:`LiradsConfig` with its source.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sonoflow.stream.imaging.visualization import visualization_score
from sonoflow.stream.messages import LesionSummary, QualityResult

VERSION = "v2017"
CATEGORIES = ("US-1", "US-2", "US-3")
RECOMMENDATIONS = {
    "US-1": "Negative: repeat ultrasound surveillance in 6 months.",
    "US-2": "Subthreshold observation (< 10 mm, not definitely benign): repeat ultrasound in "
            "3 months.",
    "US-3": "Positive observation (>= 10 mm, not definitely benign): multiphase "
            "contrast-enhanced CT or MRI.",
}
SOURCE = ("ACR US LI-RADS v2017; Rodgers SK et al., Radiographics 2019;39(3):690-708, "
          "PMC6542628")


@dataclass(frozen=True)
class LiradsConfig:
    """Thresholds of the US LI-RADS decision, each with where it comes from.

    Attributes:
        threshold_mm: US-2 / US-3 size cut-off (US LI-RADS v2017, PMC6542628).
        definitely_benign_classes: classes treated as definitely benign. v2017 lists simple
            cysts, focal fat deposition/sparing and previously characterised benign lesions such
            as hemangiomas; "other" is our mimic class (fat sparing). Counting a hemangioma seen
            on this study as definitely benign follows the simulator's ground-truth convention
            (``sonoflow.stream.sim.config.DEFINITELY_BENIGN_CLASSES``), which is more lenient
            than clinical practice (there it must have been characterised before, e.g. by MRI).
        benign_min_prob: pooled probability of the benign classes needed to call an
            observation definitely benign (our choice: a coin flip is not "definitely").
        benign_max_malignancy: and its pooled malignancy must stay below this (our choice:
            the type and the malignancy heads must agree before an observation is dismissed;
            on held-out simulator clips the lesion classifier called 3 of 18 malignant lesions
            "other" while its malignancy head still flagged them, see
            ``benchmarks/sections/findings.md``). Errs toward follow-up.
        min_good_frames: fewer good-quality analysed frames -> abstain (our choice: about
            one second of usable liver at 30 fps, well below any surveillance sweep).
        good_quality: frame quality score at or above which a frame counts as good (our
            choice, matches the key-frame threshold the quality stage defaults to).
        positive_overrides_few_frames: with fewer than ``min_good_frames`` good frames, a
            US-3 observation still gives US-3 instead of an abstention (our reading of v2017:
            the visualization score conveys reduced sensitivity and "does not change the
            category"; only a negative or subthreshold result needs the whole liver seen).
    """

    threshold_mm: float = 10.0
    definitely_benign_classes: tuple[str, ...] = ("cyst", "hemangioma", "other")
    benign_min_prob: float = 0.5
    benign_max_malignancy: float = 0.5
    min_good_frames: int = 30
    good_quality: float = 0.5
    positive_overrides_few_frames: bool = True


@dataclass(frozen=True)
class LiradsResult:
    """The study-level result; :meth:`to_json` is the ``lirads`` block of case.json."""

    category: str | None
    visualization: str
    visualization_reason: str
    recommendation: str
    reason: str
    per_lesion: dict[int, str]

    def to_json(self) -> dict:
        return {"version": VERSION, "category": self.category,
                "visualization": self.visualization,
                "visualization_reason": self.visualization_reason,
                "recommendation": self.recommendation, "reason": self.reason,
                "per_lesion": {str(k): v for k, v in sorted(self.per_lesion.items())},
                "source": SOURCE}


def benign_probability(lesion: LesionSummary, config: LiradsConfig) -> float:
    """Pooled probability that ``lesion`` belongs to a definitely benign class."""
    return float(sum(lesion.class_probs.get(c, 0.0) for c in config.definitely_benign_classes))


def lesion_category(lesion: LesionSummary, calibrated: bool,
                    config: LiradsConfig) -> str | None:
    """US category implied by one observation; None when its size is needed but unknown.

    Args:
        lesion: the pooled lesion (``long_axis_mm`` None when uncalibrated).
        calibrated: whether mm sizes exist for this study.
        config: thresholds.

    Returns:
        "US-1", "US-2", "US-3", or None (not definitely benign and not measurable).
    """
    benign_type = benign_probability(lesion, config) >= config.benign_min_prob
    benign_head = lesion.malignancy is None or lesion.malignancy < config.benign_max_malignancy
    if benign_type and benign_head:
        return "US-1"
    if not calibrated or lesion.long_axis_mm is None:
        return None
    return "US-3" if lesion.long_axis_mm >= config.threshold_mm else "US-2"


def categorize(lesions: Sequence[LesionSummary], good_frames: int, calibrated: bool,
               visualization: tuple[str, str], config: LiradsConfig | None = None
               ) -> LiradsResult:
    """Study-level US LI-RADS v2017 category with its recommendation.

    Args:
        lesions: confirmed lesions of the study.
        good_frames: analysed frames with quality >= ``config.good_quality``.
        calibrated: mm/px known (sizes in mm exist).
        visualization: ``(score, reason)`` from the visualization score.
        config: thresholds (defaults: :class:`LiradsConfig`).

    Returns:
        The :class:`LiradsResult`; ``category`` None when abstaining, with the reason.
    """
    cfg = config or LiradsConfig()
    vis, vis_reason = visualization
    per_lesion = {les.lesion_id: lesion_category(les, calibrated, cfg) for les in lesions}
    shown = {k: v or "unmeasured" for k, v in per_lesion.items()}  # per lesion, when not final
    positive = sorted(k for k, v in per_lesion.items() if v == "US-3")
    if good_frames < cfg.min_good_frames and positive and cfg.positive_overrides_few_frames:
        reason = (f"driven by lesion(s) {positive}, seen on only {good_frames} good-quality "
                  f"analysed frame(s) ({cfg.min_good_frames} needed to support a negative): "
                  "the positive observation stands; other observations may have been missed")
        return LiradsResult("US-3", vis, vis_reason,
                            RECOMMENDATIONS["US-3"] + " Image quality was poor on most frames: "
                            "the rest of the liver was not adequately seen.", reason,
                            shown)
    if good_frames < cfg.min_good_frames:
        reason = (f"abstained: only {good_frames} good-quality analysed frame(s), "
                  f"{cfg.min_good_frames} needed to support a category")
        return LiradsResult(None, vis, vis_reason,
                            "No category: too few good-quality frames. Repeat the ultrasound "
                            "with adequate image quality.", reason,
                            shown)
    unmeasured = sorted(k for k, v in per_lesion.items() if v is None)
    if unmeasured:
        reason = (f"abstained: lesion(s) {unmeasured} are not definitely benign but the image is "
                  f"uncalibrated, so the {cfg.threshold_mm:g} mm US-2/US-3 threshold cannot be "
                  f"applied")
        return LiradsResult(None, vis, vis_reason,
                            "No category: size unknown (no pixel spacing). Measure the "
                            "observation(s) on a calibrated image.", reason,
                            shown)
    category = max(per_lesion.values(), key=CATEGORIES.index, default="US-1")
    drivers = sorted(k for k, v in per_lesion.items() if v == category)
    if not per_lesion:
        reason = "no observation"
    elif category == "US-1":
        reason = f"only definitely benign observation(s): {drivers}"
    else:
        reason = f"driven by lesion(s) {drivers}"
    recommendation = RECOMMENDATIONS[category]
    if vis == "C":
        recommendation += (" Visualization C (severe limitations): the sensitivity of this study "
                           "is reduced; the category stands but a negative result is weak.")
    return LiradsResult(category, vis, vis_reason, recommendation, reason,
                        {k: v for k, v in per_lesion.items() if v is not None})


def visualization_from_quality(results: Sequence[QualityResult]) -> tuple[str, str]:
    """The visualization score from the quality stage's per-frame results.

    Uses ``sonoflow.stream.imaging.visualization.visualization_score`` (owned by the
    preprocessing work). With no quality results at all (a pipeline without a quality stage)
    the score cannot be judged and is reported as "C" with that reason.

    Args:
        results: the ``QualityResult`` of every frame that had one.

    Returns:
        ``(score, reason)`` with score "A" | "B" | "C".
    """
    if not results:
        return "C", "no quality results: the pipeline has no quality stage, visibility unknown"
    return visualization_score(list(results))
