"""Does a hand-made attenuation estimate add to the frame network's steatosis grade?

Per good frame, inside the frame network's own liver mask, on its input image: mean and spread
of the grey level, the least-squares slope and intercept of grey level against depth in cm
(the depth from the frame's mm/px), the liver's mean depth, its 90th percentile and its area.
A multinomial logistic regression (L2, scipy L-BFGS) is fitted on the validation frames, on
(a) the network's log-probabilities alone, (b) the features alone, (c) both, and scored on the
held-out frames. The features stand in for an attenuation-imaging (ATI-like) estimate.

Usage::

    .venv/bin/python benchmarks/steatosis_features.py \\
        --fit-config training/configs/frame_stage4.toml \\
        --test-config training/configs/frame_heldout_large.toml \\
        --out benchmarks/results/models_s7/steatosis_features.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

N_GRADES = 4


def frame_features(data, outputs_fn, norm) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(network log-probabilities (N, 4), features (N, 7), true grades (N,))`` per good
    frame."""
    from sonoflow.training.tasks import frame as task

    idx = task.good_frames(data)
    out = task.predict(outputs_fn, data, idx, norm, 32)
    liver = out["liver_mask"][:, 0] > 0.5
    feats = np.zeros((len(idx), 7))
    for j, i in enumerate(idx):
        img = data["image"][i].astype(np.float64)
        scale = img.shape[0] // liver.shape[-1]
        m = np.repeat(np.repeat(liver[j], scale, 0), scale, 1)
        ys, xs = np.nonzero(m)
        if len(ys) < 200:
            continue  # no liver to measure: the features stay 0
        v = img[ys, xs]
        depth_cm = ys * float(data["mm_per_px"][i][1]) / 10.0
        slope, intercept = np.linalg.lstsq(np.c_[depth_cm, np.ones_like(depth_cm)], v,
                                           rcond=None)[0]
        feats[j] = (v.mean(), v.std(), slope, intercept, depth_cm.mean(),
                    np.percentile(v, 90), len(v))
    return np.log(np.clip(out["steatosis"], 1e-6, 1.0)), feats, data["steatosis"][idx]


def fit_softmax(X: np.ndarray, y: np.ndarray, l2: float = 1e-2):
    """Multinomial logistic regression on standardised ``X``; returns a predict function."""
    mu, sd = X.mean(0), X.std(0) + 1e-9
    Z = np.c_[(X - mu) / sd, np.ones(len(X))]
    D = Z.shape[1]

    def loss(w):
        W = w.reshape(D, N_GRADES)
        L = Z @ W
        L -= L.max(1, keepdims=True)
        logp = L - np.log(np.exp(L).sum(1, keepdims=True))
        P = np.exp(logp)
        P[np.arange(len(y)), y] -= 1.0
        g = Z.T @ P / len(y)
        g[:-1] += 2 * l2 * W[:-1]
        return -logp[np.arange(len(y)), y].mean() + l2 * (W[:-1] ** 2).sum(), g.ravel()

    W = minimize(loss, np.zeros(D * N_GRADES), jac=True, method="L-BFGS-B").x.reshape(D, N_GRADES)
    return lambda Xn: (np.c_[(Xn - mu) / sd, np.ones(len(Xn))] @ W).argmax(1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fit-config", type=Path, required=True, help="its val split is fitted on")
    ap.add_argument("--test-config", type=Path, required=True, help="its heldout split is scored")
    ap.add_argument("--model", default="frame-v1")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    from sonoflow.models import registry, runtime
    from sonoflow.training.tasks import frame as task

    fit_cfg, test_cfg = task.load_config(args.fit_config), task.load_config(args.test_config)
    norm = dict(fit_cfg["model"]["normalisation"])
    path, card = registry.resolve(args.model, "fp32")
    with runtime.load(path, "ort-cpu", threads=1, card=card) as rt:
        fn = task.ort_outputs(rt)
        lp_f, x_f, y_f = frame_features(task.load_split(fit_cfg, "val", 1), fn, norm)
        lp_t, x_t, y_t = frame_features(task.load_split(test_cfg, "heldout", 1), fn, norm)
    rows = {"network argmax (shipped)": {"fit": float((lp_f.argmax(1) == y_f).mean()),
                                         "heldout": float((lp_t.argmax(1) == y_t).mean())}}
    for name, (a, b) in {"network, refitted": (lp_f, lp_t), "features only": (x_f, x_t),
                         "network + features": (np.c_[lp_f, x_f], np.c_[lp_t, x_t])}.items():
        pred = fit_softmax(a, y_f)
        rows[name] = {"fit": float((pred(a) == y_f).mean()),
                      "heldout": float((pred(b) == y_t).mean())}
    doc = {"model": card.artifact_name, "fit_frames": int(len(y_f)),
           "heldout_frames": int(len(y_t)), "fit_split": f"{args.fit_config} val",
           "heldout_split": f"{args.test_config} heldout",
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "accuracy": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1))
    for name, r in rows.items():
        print(f"{name:28s} fit {r['fit']:.3f}  held-out {r['heldout']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
