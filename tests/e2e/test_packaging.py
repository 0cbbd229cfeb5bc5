"""A built wheel is the whole product: its package carries conf/, and bof-train runs from any directory
with no source tree in sight."""

import os
import subprocess
import sys
from pathlib import Path

import tomllib

from tests.helpers import REPO


def test_the_package_list_names_every_package_of_src_bof():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO / "src").parts) for p in (REPO / "src").rglob("__init__.py")}
    assert listed == found | {"bof.conf"}


def test_an_installed_wheel_dry_runs_from_another_directory(tmp_path, cache_dir):
    wheels, site, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run(
        [*pip, "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-w", str(wheels)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = wheels.glob("bof-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, timeout=600)
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    where = subprocess.run(
        [sys.executable, "-c", "import bof.config as c; print(c.__file__, c.CONFIG_DIR)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    module, config_dir = where.stdout.split()
    assert Path(module).is_relative_to(site) and Path(config_dir) == site / "bof" / "conf"
    done = subprocess.run(
        [sys.executable, "-m", "bof.train", "+debug=fast", "trainer.dry_run=true", f"data.root={cache_dir}"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "dry run" in done.stdout + done.stderr and any((elsewhere / "outputs").rglob("lr_schedule.png"))


def test_a_second_checkout_is_named_instead_of_silently_ignored(tmp_path):
    from bof.config import CONFIG_DIR, other_checkout

    other = tmp_path / "bof-clone2"
    (other / "conf").mkdir(parents=True)
    (other / "conf" / "train.yaml").write_text("")
    (other / "src" / "bof").mkdir(parents=True)
    (other / "conf" / "deep").mkdir()
    warning = other_checkout(other / "conf" / "deep")  # anywhere inside it
    assert warning and str(other) in warning and "pip install -e ." in warning
    assert other_checkout(CONFIG_DIR.parent) is None and other_checkout(tmp_path) is None
