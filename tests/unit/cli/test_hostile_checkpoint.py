"""A checkpoint is data: its stored config must never run code. A checkpoint that
torch.load(weights_only=True) accepts can still name any callable in its config (``_target_``); bof-eval,
bof-predict and bof-export refuse one that names anything conf/ cannot produce, naming the key, before
anything is instantiated."""

import io
import pathlib
import pickle

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from bof.cli import evaluate, export, predict
from bof.config import CONFIG_DIR, bof_targets
from bof.engine.build_model import build_model


class WritesAFile:
    """Unpickling this writes ``path``: what an attacker's pickle would do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return pathlib.Path.write_text, (pathlib.Path(self.path), "pwned")


def payloads(target: pathlib.Path) -> dict:
    return {
        "runs a pickle": {
            "_target_": "torch.load",
            "weights_only": False,
            "f": {"_target_": "io.BytesIO", "_args_": [pickle.dumps(WritesAFile(target))]},
        },
        "writes a file": {
            "_target_": "pathlib.Path.write_text",
            "self": {"_target_": "pathlib.Path", "_args_": [str(target)]},
            "data": "pwned",
        },
    }


def hostile_checkpoint(tmp_path, payload) -> pathlib.Path:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        config = OmegaConf.to_container(compose("train", overrides=["+debug=fast"]), resolve=False)
    config["model"]["postprocess"] = payload
    path = tmp_path / "hostile.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "config": config}, path)
    torch.load(path, weights_only=True)  # torch's safe loader lets it through: bof must not
    return path


@pytest.mark.parametrize("kind", ["runs a pickle", "writes a file"])
@pytest.mark.parametrize(
    "entry",
    [
        lambda ckpt, out: evaluate.main([f"checkpoint={ckpt}", f"output={out}"]),
        lambda ckpt, out: predict.main([f"checkpoint={ckpt}", f"input={ckpt.parent}", f"output={out}"]),
        lambda ckpt, out: export.main([f"checkpoint={ckpt}", f"output={out}/model.onnx"]),
    ],
    ids=["bof-eval", "bof-predict", "bof-export"],
)
def test_a_stored_config_naming_foreign_code_is_refused_before_anything_runs(tmp_path, kind, entry):
    target = tmp_path / "pwned.txt"
    checkpoint = hostile_checkpoint(tmp_path, payloads(target)[kind])
    with pytest.raises(ValueError, match=r"model\.postprocess\._target_=.*not one of bof's own components"):
        entry(checkpoint, tmp_path / "out")
    assert not target.exists()


def test_a_stored_unresolved_config_that_builds_foreign_code_when_resolved_is_refused(tmp_path):
    """The unresolved config (``config_source``) is resolved after bof-eval's overrides: a resolver that
    builds a node (oc.create) is checked as what it builds, before anything is instantiated."""
    target = tmp_path / "pwned.txt"
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        config = OmegaConf.to_container(compose("train", overrides=["+debug=fast"]), resolve=False)
    path = f"{{_target_:pathlib.Path,_args_:['{target}']}}"
    built = f"{{_target_:pathlib.Path.write_text,self:{path},data:pwned}}"
    source = {**config, "model": {**config["model"], "postprocess": f"${{oc.create:{built}}}"}}
    checkpoint = tmp_path / "hostile.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "config": config, "config_source": source}, checkpoint)
    with pytest.raises(ValueError, match=r"model\.postprocess\._target_=.*not one of bof's own components"):
        evaluate.main([f"checkpoint={checkpoint}", f"output={tmp_path / 'out'}"])
    assert not target.exists()


def test_the_allowlist_is_what_conf_names():
    targets = bof_targets()
    assert "bof.models.yolov3.YOLOv3Postprocess" in targets or any(
        "postprocess" in t.lower() for t in targets
    )
    assert not {"torch.load", "io.BytesIO", "pathlib.Path.write_text", "os.system"} & targets


def test_an_unreadable_checkpoint_error_never_advises_unpickling(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"model": io.BytesIO(b"x")}, path)  # an object beyond tensors: weights_only refuses it
    with pytest.raises(ValueError, match="not a readable torch checkpoint") as error:
        evaluate.main([f"checkpoint={path}"])
    assert "weights_only" not in str(error.value)


def test_a_checkpoint_with_non_finite_weights_is_refused_not_scored_zero(tmp_path):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["+debug=fast"])
    model = build_model(cfg, 6, torch.device("cpu"))
    state = model.state_dict()
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = torch.full_like(state[first], float("nan"))
    path = tmp_path / "diverged.pt"
    torch.save({"model": state, "config": OmegaConf.to_container(cfg, resolve=False)}, path)
    with pytest.raises(ValueError, match=rf"holds 1 non-finite tensors \({first}\)"):
        evaluate.main([f"checkpoint={path}", f"output={tmp_path / 'eval'}"])
    assert not (tmp_path / "eval").exists()
