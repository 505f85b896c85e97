"""`python -m stylegallery bench`: figures per stage, cold and warm, exact model-call counts."""

from __future__ import annotations

import pytest

from stylegallery import bench, cli
from stylegallery.request import Request


def test_bench_prints_a_row_per_size_styles_and_cache_with_the_classic_engine() -> None:
    lines: list[str] = []
    bench.bench(Request(engine="classic", preset="fast"), [64], [1, 2], repeats=1, out=lines.append)
    assert lines[0].startswith("# engine classic, preset fast, load ") and "torch loaded" in lines[0]
    rows = [[part.split() for part in line.split("|")] for line in lines[3:]]
    assert [tuple(row[0]) for row in rows] == [("64", n, cache) for n in ("1", "2") for cache in ("cold", "warm")]
    for (_, _, cache), times, counts, (rss, cuda, syncs, out_px) in rows:
        analyze, segment, match, transfer, total = map(float, times)
        assert total >= transfer > 0 and float(rss) > 0 and cuda == syncs == "-"
        assert counts == ["0", "0", "0"]  # no UNet in the classic engine
        assert out_px == "64"  # the classic engine paints at the working size


def test_bench_photo_size_sets_the_size_of_the_photo_and_so_the_neural_output() -> None:
    pytest.importorskip("onnxruntime")
    from skimage import data

    from stylegallery.errors import InputError

    content, style = data.chelsea(), data.coffee()  # 451x300, 600x400
    for photo_size, expected in ((None, "451"), (96, "96")):  # the photo's own size (<= stroke size), or resized
        lines: list[str] = []
        bench.bench(Request(engine="neural"), [64], [1], repeats=1, content=content, style_images=[style],
                    warm=False, out=lines.append, photo_size=photo_size)
        assert lines[3].split("|")[-1].split()[-1] == expected
    with pytest.raises(InputError, match="--photo-size 4 is too small"):
        bench.bench(Request(engine="neural"), [64], [1], repeats=1, content=content, style_images=[style],
                    out=lambda line: None, photo_size=4)


def test_bench_tiny_models_are_refused_for_an_engine_without_models() -> None:
    from stylegallery.errors import InputError

    with pytest.raises(InputError, match="the classic engine has no models to stand in for: drop --tiny"):
        bench.bench(Request(engine="classic"), [64], [1], repeats=1, tiny=True, out=lambda line: None)


def test_bench_prints_exact_unet_counts_per_stage(capsys) -> None:
    pytest.importorskip("diffusers")
    steps, counts = 2, (1, 2)
    code = cli.main(["bench", "--engine", "diffusion", "--tiny", "--sizes", "64", "--styles", "1,2", "--steps",
                     str(steps), "--repeats", "1", "--device", "cpu", "--dtype", "auto"])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].startswith("# engine diffusion, preset paper, device cpu, dtype float32, lora none")
    assert lines[1].startswith("# resident weights: unet float32 ") and "all models float32" in lines[1]
    header = [part.split() for part in lines[2].split("|")]
    assert header == [["size", "styles", "cache"], ["analyze", "segment", "match", "transfer", "total"],
                      ["fwd_analyze", "fwd_transfer", "bwd_transfer"], ["rss_MB", "cuda_MB", "syncs/step", "out_px"]]
    rows = [[part.split() for part in line.split("|")] for line in lines[4:]]
    assert [tuple(row[0]) for row in rows] == [("64", str(n), cache) for n in counts for cache in ("cold", "warm")]
    for (_, n, cache), times, (fwd_analyze, fwd_transfer, bwd_transfer), (rss, cuda, syncs, _) in rows:
        assert all(float(t) >= 0 for t in times) and float(rss) > 0 and cuda == syncs == "-"  # CUDA only
        # stage 1: 15 inversion forwards per image, none with a warm cache; stage 3: per step one batched
        # reference call and one forward/backward on z (iters 1)
        assert int(fwd_analyze) == (15 * (1 + int(n)) if cache == "cold" else 0)
        assert (int(fwd_transfer), int(bwd_transfer)) == (steps * 2, steps)
