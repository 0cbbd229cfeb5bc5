"""Class label smoothing (paper section 3.2; docs/fidelity.md "Label smoothing").

Two rules, one per kind of classification head:

* softmax heads (Faster R-CNN RoI classifier, K + 1 classes): q' = (1 - eps) q + eps / (K + 1), which is
  ``torch.nn.functional.cross_entropy(..., label_smoothing=eps)``; the paper used eps = 0.01 (the
  author's reply in gluon-cv #623).
* sigmoid heads (YOLOv3 class BCE): positive target 1 - eps, negative target eps, eps = min(1/K, 1/40)
  (VOC 0.025, COCO 0.0125). Objectness is never smoothed. (GluonCV's first version set every target
  to 1/K and drove the mAP to ~5%: gluon-cv #742, fixed by #745.)
"""

from __future__ import annotations

SOFTMAX_EPSILON = 0.01
SIGMOID_MAX_EPSILON = 1.0 / 40


class LabelSmoothing:
    """``epsilon``: None picks each head's paper rule; a number overrides both rules."""

    def __init__(self, epsilon: float | None = None):
        if epsilon is not None and not 0.0 <= epsilon < 0.5:
            raise ValueError(f"smoothing.epsilon must be in [0, 0.5), got {epsilon}")
        self.epsilon = epsilon

    def sigmoid_epsilon(self, num_classes: int) -> float:
        return self.epsilon if self.epsilon is not None else min(1.0 / num_classes, SIGMOID_MAX_EPSILON)

    def softmax_epsilon(self) -> float:
        return self.epsilon if self.epsilon is not None else SOFTMAX_EPSILON

    def __repr__(self) -> str:
        rule = self.epsilon if self.epsilon is not None else "min(1/K, 1/40) sigmoid, 0.01 softmax"
        return f"label smoothing eps={rule}"
