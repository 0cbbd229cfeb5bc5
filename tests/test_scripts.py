"""The benchmark scripts run end to end on tiny data (their numbers are for notes, not assertions)."""

import importlib.util
from pathlib import Path

from tests.conftest import TINY

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
DATA = [o for o in TINY if o.startswith("++data.")]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_augment_reports_every_pipeline(cache_dir, capsys):
    rows = load("bench_augment").main(["--size", "64", "--images", "4", f"data.root={cache_dir}", *DATA])
    assert len(rows) == 4 and all(v > 0 for v in rows.values())
    assert "torchvision.transforms.v2 reference" in capsys.readouterr().out


def test_bench_train_reports_the_four_measurements(cache_dir):
    result = load("bench_train").main(
        ["--iters", "1", "--warmup", "1", *TINY, f"data.root={cache_dir}", "trainer.device=cpu"]
    )
    assert set(result) == {"bare", "full", "ratio", "per_worker"} and result["full"] > 0
