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

import torch
import torch.nn.functional as F

from bof.utils.checks import require

SOFTMAX_EPSILON = 0.01
SIGMOID_MAX_EPSILON = 1.0 / 40


class LabelSmoothing:
    """``epsilon``: None picks each head's paper rule; a number overrides both rules."""

    def __init__(self, epsilon: float | None = None):
        # [0, 0.5), not [0, 1) (the start-up rule this replaces): one epsilon overrides both heads, and a
        # sigmoid head's positive target 1 - eps must stay above its negatives' eps (at 0.5 they are equal)
        require("smoothing.epsilon", epsilon, lambda v: 0 <= v < 0.5, "a number in [0, 0.5)", optional=True)
        self.epsilon = epsilon

    def sigmoid_epsilon(self, num_classes: int) -> float:
        return self.epsilon if self.epsilon is not None else min(1.0 / num_classes, SIGMOID_MAX_EPSILON)

    def softmax_epsilon(self) -> float:
        return self.epsilon if self.epsilon is not None else SOFTMAX_EPSILON

    def __repr__(self) -> str:
        rule = self.epsilon if self.epsilon is not None else "min(1/K, 1/40) sigmoid, 0.01 softmax"
        return f"label smoothing eps={rule}"


def sigmoid_targets(labels: torch.Tensor, num_classes: int, epsilon: float | None = None) -> torch.Tensor:
    """One-hot targets [G, K] of a sigmoid (BCE) head; smoothed, the positive is 1 - eps and every
    negative eps (GluonCV after PR #745)."""
    onehot = F.one_hot(labels, num_classes).float()
    return onehot * (1.0 - 2.0 * epsilon) + epsilon if epsilon else onehot


def softmax_targets(labels: torch.Tensor, num_classes: int, epsilon: float | None = None) -> torch.Tensor:
    """Soft targets [B, K] of a softmax head, q' = (1 - eps) q + eps / K: what
    ``F.cross_entropy(..., label_smoothing=eps)`` uses, as a tensor that classification mixup can blend."""
    onehot = F.one_hot(labels, num_classes).float()
    return onehot * (1.0 - epsilon) + epsilon / num_classes if epsilon else onehot
