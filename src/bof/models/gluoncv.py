"""GluonCV's published ImageNet backbones (model zoo ``.params`` files, read by
:mod:`bof.utils.mxnet_params`) as state dicts of bof's classifiers (:mod:`bof.models.classifiers`).

GluonCV's ``save_parameters`` (Gluon >= 1.3) names each array by its path in the network
(``_collect_params_with_prefix``); the three backbones of the paper's tables name them:

* ``darknet53`` (gluoncv/model_zoo/yolo/darknet.py, ``DarknetV3``): ``features.<i>`` a sequence of the stem
  (``features.0``), then per stage its stride-2 convolution and its residual blocks
  (``features.<i>.body.<0|1>``); every convolution cell is ``.0`` conv, ``.1`` BN; ``output`` the classifier;
* ``resnet50_v1b`` / ``resnet101_v1d`` (gluoncv/model_zoo/resnetv1b.py, ``ResNetV1b``): ``conv1`` (v1d: the
  deep stem ``conv1.0/.1/.3/.4/.6``), ``bn1``, ``layer<k>.<j>.conv<n>`` / ``bn<n>`` / ``downsample.<m>``,
  ``fc`` the classifier; the same paths as :mod:`bof.models.resnet`.

BatchNorm's ``gamma`` / ``beta`` are torch's ``weight`` / ``bias``; ``running_mean`` / ``running_var`` keep
their names. The classifier head (``output`` / ``fc``) is dropped, as for a ``task=classify`` checkpoint.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from bof.models.darknet import STAGE_BLOCKS
from bof.utils.mxnet_params import read_mxnet_params

BN_NAMES = {"gamma": "weight", "beta": "bias", "running_mean": "running_mean", "running_var": "running_var"}
HEADS = ("output.", "fc.")  # DarknetV3's and ResNetV1b's classifier


def darknet_paths() -> dict[str, str]:
    """GluonCV ``DarknetV3`` (53 layers) module path -> bof ``Darknet53Classifier`` module path."""
    paths, index = {"features.0.": "backbone.stem."}, 1
    for stage, blocks in enumerate(STAGE_BLOCKS):
        paths[f"features.{index}."] = f"backbone.stages.{stage}.0."
        index += 1
        for block in range(blocks):
            paths[f"features.{index}.body."] = f"backbone.stages.{stage}.{block + 1}.body."
            index += 1
    return paths


def torch_name(name: str, paths: dict[str, str]) -> str:
    """A GluonCV parameter name as torch names it: BN suffixes renamed, module paths mapped."""
    module, _, leaf = name.rpartition(".")
    name = f"{module}.{BN_NAMES.get(leaf, leaf)}"
    match = re.match(r"features\.\d+\.(body\.)?", name)
    if match and match.group(0) in paths:
        return paths[match.group(0)] + name[match.end() :]
    return name


def gluoncv_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(classifier state dict without its head, torch name -> the file's name) of a GluonCV backbone file.
    Legacy files named by Gluon's prefixes (``darknetv30_conv0_weight``, no dots) are refused by name."""
    arrays = read_mxnet_params(path)
    if arrays and not any("." in name for name in arrays):
        raise ValueError(
            f"{path}: parameters named by Gluon prefixes (e.g. {next(iter(arrays))}), written by "
            "save_params before Gluon 1.3; bof reads the structural names save_parameters writes (load and "
            "save_parameters it once with GluonCV to convert)"
        )
    paths = darknet_paths() if any(name.startswith("features.") for name in arrays) else {}
    state, origin = {}, {}
    for name, array in arrays.items():
        if name.startswith(HEADS):
            continue
        key = torch_name(name, paths)
        state[key], origin[key] = torch.from_numpy(array.copy()), name
    return state, origin
