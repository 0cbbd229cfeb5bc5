"""scripts/prepare_{voc,coco}.sh offline: --dry-run plans every official download and changes nothing;
a second run over unpacked data does nothing."""

import subprocess

import pytest

from tests.helpers import SCRIPTS

ARCHIVES = {
    "prepare_voc.sh": {
        "VOCtrainval_06-Nov-2007.tar": "c52e279531787c972589f7e41ab4ae64",
        "VOCtest_06-Nov-2007.tar": "b6e924de25625d8de591ea690078ad9f",
        "VOCtrainval_11-May-2012.tar": "6cd6e144f989b92b3379bac3b3de84fd",
    },
    "prepare_coco.sh": {
        "train2017.zip": "cced6f7f71b7629ddf16f17bbcfab6b2",
        "val2017.zip": "442b8da7639aecaf257c1dceb8ba8c80",
        "annotations_trainval2017.zip": "f4bbac642086de4f52a3fdda2de5fa2c",
    },
}


def run(script, *args):
    return subprocess.run(["bash", str(SCRIPTS / script), *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("script", sorted(ARCHIVES))
def test_dry_run_plans_every_verified_download_and_touches_nothing(script, tmp_path):
    done = run(script, "--dry-run", "--data", str(tmp_path / "data"))
    assert done.returncode == 0, done.stderr
    for name, md5 in ARCHIVES[script].items():
        assert "would run: curl" in done.stdout and name in done.stdout and md5 in done.stdout
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("script", sorted(ARCHIVES))
def test_second_run_over_unpacked_data_does_nothing(script, tmp_path):
    dest = tmp_path / "data" / ("coco" if "coco" in script else "")
    dest.mkdir(parents=True)
    for name in ARCHIVES[script]:
        (dest / f".{name}.unpacked").touch()
    done = run(script, "--data", str(tmp_path / "data"))  # not a dry run: would fail without network
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("already unpacked") == 3 and "download" not in done.stdout


def test_unknown_argument_is_refused(tmp_path):
    done = run("prepare_voc.sh", "--frobnicate")
    assert done.returncode == 2 and "unknown argument: --frobnicate" in done.stderr
