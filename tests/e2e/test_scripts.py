"""The benchmark scripts run end to end on tiny data (their numbers are for notes, not assertions)."""

import importlib.util

from tests.helpers import SCRIPTS, TINY, TINY_FASTER_RCNN

DATA = [o for o in TINY if o.startswith("++data.")]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_augment_reports_every_pipeline(cache_dir, capsys):
    args = ["--size", "64", "--images", "2", "--rounds", "2", f"data.root={cache_dir}", *DATA]
    results = load("bench_augment").main(args)
    assert list(results) == ["synthetic 500 x 375", "synthetic 640 x 480"]  # both photo sizes, as columns
    for rows in results.values():
        assert len(rows) == 4 and all(len(v) == 2 and min(v) > 0 for v in rows.values())
    out = capsys.readouterr().out
    assert "torchvision.transforms.v2 reference" in out and "min-max of 2" in out


def test_bench_train_reports_the_four_measurements(cache_dir):
    result = load("bench_train").main(
        [
            "--iters",
            "1",
            "--rounds",
            "3",
            "--warmup",
            "1",
            *TINY,
            f"data.root={cache_dir}",
            "trainer.device=cpu",
        ]
    )
    assert set(result) == {"bare", "full", "ratio", "per_worker", "outside", "spread"} and result["full"] > 0
    low, high = result["spread"]["full"]  # the median of the interleaved rounds lies within their range
    assert low <= result["full"] <= high and 0.0 <= result["outside"] < 1.0


def test_bench_train_runs_faster_rcnn(cache_dir):
    result = load("bench_train").main(
        [
            "--iters",
            "1",
            "--rounds",
            "1",
            "--warmup",
            "0",
            *[o for o in TINY if not o.startswith("model.")],
            "model=faster_rcnn_r50_c4",
            *TINY_FASTER_RCNN,
            f"data.root={cache_dir}",
            "trainer.device=cpu",
        ]
    )
    assert result["full"] > 0 and result["bare"] > 0


def test_bench_faster_rcnn_times_all_four_models():
    result = load("bench_faster_rcnn").main(["--iters", "1", "--height", "64", "--width", "96"])
    assert set(result) == {
        "faster_rcnn_r50_fpn",
        "faster_rcnn_r101_fpn",
        "faster_rcnn_r50_c4",
        "faster_rcnn_r101_c4",
    }


def test_draw_synthetic_draws_every_option_row(tmp_path):
    from PIL import Image

    module = load("draw_synthetic")
    out = tmp_path / "options.png"
    module.main(["--out", str(out), "--columns", "2", "--cell", "40"])
    with Image.open(out) as picture:  # a row per option setting, a column per image seed
        assert picture.height == len(module.ROWS) * 44 and picture.width == 110 + 2 * 44


def test_bench_faster_rcnn_mini_times_the_narrow_c4_and_the_narrow_yolov3():
    args = ["--mini", "--iters", "1", "--depths", "50", "--widths", "0.125", "--rois", "16"]
    result = load("bench_faster_rcnn").main([*args, "--batch-sizes", "2", "--threads", "1"])
    assert set(result) == {
        ("train", "faster_rcnn_r50_c4", 0.125, 16, "12000/2000", 2, 1),
        ("train", "faster_rcnn_r50_c4", 0.125, 16, "850/150", 2, 1),
        ("train", "yolov3_narrow", 0.125, "-", "-", 2, 1),
        ("infer", "faster_rcnn_r50_c4", 0.125, "6000/300", 1),
        ("infer", "faster_rcnn_r50_c4", 0.125, "430/25", 1),
        ("infer", "yolov3_narrow", 0.125, "-", 1),
    }
    assert all(seconds > 0 for seconds in result.values())
