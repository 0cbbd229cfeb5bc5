"""What a checkpoint stores of its config and how bof-eval, bof-predict and bof-export apply overrides to
it: interpolations of the config's own keys survive (an override reaches every key that names it), those
that need Hydra or the environment are fixed to their values, and an unknown key is an error."""

import pytest
from omegaconf import OmegaConf

from bof.utils.stored_config import portable_config, with_overrides


def test_the_stored_config_keeps_its_own_interpolations_and_fixes_the_others(monkeypatch):
    monkeypatch.setenv("BOF_TEST_ROOT", "/from/env")
    OmegaConf.register_new_resolver("bof_test_dir", lambda: "/run/dir", replace=True)
    cfg = OmegaConf.create(
        {
            "data": {
                "root": "${oc.env:BOF_TEST_ROOT}",
                "val": {"root": "${data.root}", "sets": ["${..root}/a"]},
            },
            "trainer": {"output_dir": "${bof_test_dir:}", "log": "${trainer.output_dir}/train.log"},
        }
    )
    stored = portable_config(cfg)
    assert stored == {
        "data": {"root": "/from/env", "val": {"root": "${data.root}", "sets": ["${..root}/a"]}},
        "trainer": {"output_dir": "/run/dir", "log": "${trainer.output_dir}/train.log"},
    }
    expected = OmegaConf.to_container(cfg, resolve=True)
    monkeypatch.delenv("BOF_TEST_ROOT")  # elsewhere: another environment, the same values
    assert OmegaConf.to_container(with_overrides(stored, [], "test"), resolve=True) == expected
    moved = with_overrides(stored, ["data.root=/other"], "test")
    assert moved.data.val.root == "/other" and moved.data.val.sets == ["/other/a"]


def test_an_override_of_no_stored_key_names_it_and_its_neighbours_unless_added_with_plus():
    stored = {"model": {"val_size": 64, "train_size": 64}, "seed": 0}
    with pytest.raises(ValueError, match=r"x.pt: could not override 'model.val_sise'.*nearest: model"):
        with_overrides(stored, ["model.val_sise=128"], "checkpoint=x.pt")
    with pytest.raises(ValueError, match=r"'sed'.*To add one, use \+sed=1"):
        with_overrides(stored, ["sed=1"], "checkpoint=x.pt")
    assert with_overrides(stored, ["+model.extra=1", "model.val_size=96"], "x").model == {
        "val_size": 96,
        "train_size": 64,
        "extra": 1,
    }
