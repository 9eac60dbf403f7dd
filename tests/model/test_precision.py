"""--precision: the one decision (model/precision.py), its autocast, and where it is recorded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lymph.data.errors import ConfigError
from lymph.model import precision as prec
from lymph.model.infer import predict_probs
from lymph.model.unet import UNet, UNetConfig


@pytest.fixture
def cpu_flags(monkeypatch: pytest.MonkeyPatch):
    """Set the CPU's bf16 flags the decision sees (the hardware probe mocked)."""

    def set_flags(*flags: str) -> None:
        monkeypatch.setattr(prec, "cpu_features", lambda: frozenset(flags))

    return set_flags


def test_auto_stays_fp32_on_a_cpu_without_native_bf16(cpu_flags) -> None:
    cpu_flags()  # an older CPU: neither flag
    assert prec.resolve_precision("auto", "cpu") == "fp32"
    cpu_flags("avx512_bf16")  # bf16 dot products but no AMX: measured slower, so fp32
    assert prec.resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert not prec.cpu_bf16_native()


def test_auto_uses_bf16_on_amx_cpus_and_cuda(cpu_flags) -> None:
    cpu_flags("amx_bf16", "avx512_bf16")
    assert prec.cpu_bf16_native()
    assert prec.resolve_precision("auto", "cpu") == "bf16"
    cpu_flags()
    assert prec.resolve_precision("auto", "cuda") == "bf16"
    assert prec.resolve_precision("auto", torch.device("cuda", 1)) == "bf16"
    assert prec.resolve_precision("auto", "mps") == "fp32"


def test_explicit_precisions_are_honoured(cpu_flags) -> None:
    cpu_flags()
    assert prec.resolve_precision("bf16", "cpu") == "bf16"
    cpu_flags("amx_bf16")
    assert prec.resolve_precision("fp32", "cpu") == "fp32"
    assert prec.resolve_precision("fp32", "cuda") == "fp32"


def test_an_unknown_precision_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"precision must be one of .*got 'fp16'"):
        prec.resolve_precision("fp16", "cpu")


def test_bf16_on_mps_is_refused() -> None:
    with pytest.raises(ConfigError, match="bf16 is not supported on device 'mps'"):
        prec.resolve_precision("bf16", "mps")


def test_autocast_needs_a_resolved_precision() -> None:
    with pytest.raises(ValueError, match="resolved precision"):
        prec.autocast("cpu", "auto")


def test_autocast_runs_convolutions_in_the_resolved_dtype() -> None:
    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.rand(1, 3, 8, 8)
    with prec.autocast("cpu", "bf16"):
        assert conv(x).dtype == torch.bfloat16
    with prec.autocast("cpu", "fp32"):
        assert conv(x).dtype == torch.float32
    with prec.run_in("cpu", "bf16") as used:
        assert used == "bf16" and conv(x).dtype == torch.bfloat16


def test_cpu_features_reads_the_bf16_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags : fpu avx2 avx512f avx512_bf16 sse2\n")
    monkeypatch.setattr(prec, "CPUINFO", info)
    monkeypatch.setattr(torch._C._cpu, "_init_amx", lambda: False, raising=False)
    prec.cpu_features.cache_clear()
    try:
        assert prec.cpu_features() == frozenset({"avx512_bf16"})
        info.write_text("flags : avx512_bf16 amx_tile amx_bf16\n")
        prec.cpu_features.cache_clear()
        assert prec.cpu_features() == frozenset({"avx512_bf16", "amx_bf16"})
        info.unlink()  # no /proc (macOS, Windows): only torch's probe answers
        prec.cpu_features.cache_clear()
        assert prec.cpu_features() == frozenset()
    finally:
        prec.cpu_features.cache_clear()


def test_bf16_probabilities_agree_with_fp32() -> None:
    torch.manual_seed(0)
    net = UNet(UNetConfig(base_width=8, depth=3, norm="batch")).eval()
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    fp32 = predict_probs(net, images, device="cpu", precision="fp32")
    bf16 = predict_probs(net, images, device="cpu", precision="bf16")
    assert fp32.dtype == bf16.dtype == np.float32
    assert not np.array_equal(fp32, bf16)  # bf16 really ran
    assert float(np.abs(fp32 - bf16).mean()) < 0.01


@pytest.mark.parametrize("build", ["predict", "train", "eval", "study"])
def test_every_config_refuses_an_unknown_precision(build: str, tmp_path: Path) -> None:
    from lymph.model.evaluate import EvalConfig
    from lymph.model.predict import PredictConfig
    from lymph.model.study import StudyConfig
    from lymph.model.train import TrainConfig

    make = {
        "predict": lambda: PredictConfig(checkpoint=tmp_path / "c.pt", out=tmp_path,
                                         precision="half"),
        "train": lambda: TrainConfig(store=tmp_path, out=tmp_path, precision="half"),
        "eval": lambda: EvalConfig(store=tmp_path, checkpoint=tmp_path / "c.pt",
                                   precision="half"),
        "study": lambda: StudyConfig(store=tmp_path, pretrained=[str(tmp_path / "c.pt")],
                                     out=tmp_path, precision="half"),
    }
    with pytest.raises(ConfigError, match="precision must be one of"):
        make[build]()


def test_predict_records_the_precision_it_used(tmp_path: Path, cpu_flags) -> None:
    from lymph.data.slides import ArraySlide
    from lymph.model.checkpoint import save_checkpoint
    from lymph.model.predict import PredictConfig, predict_slide

    torch.manual_seed(0)
    save_checkpoint(tmp_path / "tiny.pt", model=UNet(UNetConfig(base_width=4, depth=2)),
                    config={"store": {"patch_size": 64, "level": 0}, "stage": "finetune"})
    rgb = np.full((256, 256, 3), 240, np.uint8)
    rgb[32:224, 32:224] = (150, 60, 140)
    cpu_flags("avx512_bf16")
    metas, maps = {}, {}
    for asked in ("auto", "bf16"):
        res = predict_slide(
            ArraySlide(rgb, path="s"),
            PredictConfig(checkpoint=tmp_path / "tiny.pt", out=tmp_path / asked, device="cpu",
                          precision=asked, thumb_size=128, map_downsample=4, threads=1,
                          progress=False),
        )
        metas[asked] = json.loads((tmp_path / asked / "s_predict.json").read_text())["settings"]
        maps[asked] = res.map_path
    assert metas["auto"]["precision"] == "auto" and metas["auto"]["precision_used"] == "fp32"
    assert metas["bf16"]["precision_used"] == "bf16"
    assert metas["auto"]["cpu_bf16_flags"] == ["avx512_bf16"]
    import tifffile

    a, b = (tifffile.imread(maps[k]).astype(np.int16) for k in ("auto", "bf16"))
    assert np.abs(a - b).mean() < 0.01 * 255


@pytest.mark.parametrize("command", [["predict", "--slides", "."], ["train", "--store", "."],
                                     ["eval", "patches"], ["study", "--store", "."]])
def test_cli_refuses_an_unknown_precision(command: list[str]) -> None:
    from click.testing import CliRunner

    from lymph.cli import main

    r = CliRunner().invoke(main, [*command, "--precision", "half"])
    assert r.exit_code == 2 and "'half' is not one of" in r.output, r.output
    assert "Traceback" not in r.output
