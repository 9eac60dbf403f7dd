from __future__ import annotations

import pytest
import torch

from lymph.data.errors import ConfigError
from lymph.model.unet import UNet, UNetConfig, UNetOutput, group_count


def tiny(**kw: object) -> UNet:
    torch.manual_seed(0)
    return UNet(UNetConfig(base_width=4, depth=kw.pop("depth", 3), **kw))  # type: ignore[arg-type]


@pytest.mark.parametrize("h,w", [(16, 48), (40, 24), (8, 8)])
def test_forward_backward_shapes_on_multiples(h: int, w: int) -> None:
    model = tiny(depth=3)
    x = torch.rand(2, 3, h, w, requires_grad=True)
    out = model(x)
    assert isinstance(out, UNetOutput)
    assert out.mask_logits.shape == (2, 1, h, w)
    assert out.reconstruction.shape == (2, 3, h, w)
    rec = out.reconstruction.detach()
    assert 0 <= float(rec.min()) and float(rec.max()) <= 1
    (out.mask_logits.mean() + out.reconstruction.mean()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("h,w", [(17, 16), (16, 30), (33, 47)])
def test_odd_sizes_refused_naming_the_multiple(h: int, w: int) -> None:
    model = tiny(depth=3)
    assert model.multiple == 8
    with pytest.raises(ValueError, match=r"multiples of 8"):
        model(torch.rand(1, 3, h, w))


def test_wrong_channels_refused() -> None:
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        tiny()(torch.rand(1, 4, 16, 16))


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"depth": 0}, "depth"),
        ({"depth": 8}, "depth"),
        ({"base_width": 0}, "base_width"),
        ({"base_width": 2.5}, "base_width"),
        ({"in_channels": 0}, "in_channels"),
        ({"norm": "layer"}, "norm"),
        ({"last_skip": "yes"}, "last_skip"),
        ({"upsample": "nearest"}, "upsample"),
        ({"padding_mode": "circular"}, "padding_mode"),
        ({"channels_per_group": 2}, r"channels_per_group must be an integer >= 4"),
        ({"channels_per_group": 4.0}, "channels_per_group"),
    ],
)
def test_bad_config_refused(kw: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        UNetConfig(**kw)


def test_config_round_trip_and_unknown_key() -> None:
    cfg = UNetConfig(base_width=8, depth=3, last_skip=True, norm="batch")
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown UNetConfig keys"):
        UNetConfig.from_dict({**cfg.to_dict(), "heads": 2})


def test_without_last_skip_bottleneck_gets_reconstruction_gradient() -> None:
    model = tiny(depth=3, last_skip=False)
    x = torch.rand(2, 3, 32, 32)
    loss = torch.nn.functional.mse_loss(model(x).reconstruction, x)
    loss.backward()
    for name, p in model.bottleneck.named_parameters():
        assert p.grad is not None, name
        assert float(p.grad.abs().sum()) > 0, name


def _enc0_grad_with_down_path_cut(model: UNet) -> torch.Tensor:
    """Gradient of the outputs w.r.t. encoder block 0's output when the pooled path below it is
    detached: what remains is only the direct skip from encoder 0 into the last decoder block."""
    captured: dict[str, torch.Tensor] = {}

    def keep(_m: torch.nn.Module, _i: object, out: torch.Tensor) -> torch.Tensor:
        out.retain_grad()
        captured["enc0"] = out
        return out

    calls = {"n": 0}

    def cut(_m: torch.nn.Module, _i: object, out: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        return out.detach() if calls["n"] == 1 else out  # only the first pool (below enc0)

    model.encoders[0].register_forward_hook(keep)
    model.pool.register_forward_hook(cut)
    out = model(torch.rand(1, 3, 32, 32))
    (out.reconstruction.sum() + out.mask_logits.sum()).backward()
    grad = captured["enc0"].grad
    return torch.zeros(1) if grad is None else grad


def test_without_last_skip_enc0_reaches_output_only_through_the_deep_path() -> None:
    # Cut the down path: with the skip removed nothing of enc0 reaches the output...
    assert float(_enc0_grad_with_down_path_cut(tiny(last_skip=False)).abs().sum()) == 0.0
    # ...while the standard UNet still gets it straight through the last skip.
    assert float(_enc0_grad_with_down_path_cut(tiny(last_skip=True)).abs().sum()) > 0.0


def test_last_skip_changes_decoder_width() -> None:
    a, b = tiny(last_skip=False), tiny(last_skip=True)
    assert a.decoders[0].conv[0].in_channels == 4
    assert b.decoders[0].conv[0].in_channels == 8
    assert not a.decoders[0].has_skip and all(d.has_skip for d in a.decoders[1:])


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
def test_norms_run(norm: str) -> None:
    out = tiny(norm=norm)(torch.rand(2, 3, 16, 16))
    assert out.mask_logits.shape == (2, 1, 16, 16)


def test_old_checkpoint_settings_load_as_they_were_built() -> None:
    old = {"in_channels": 3, "base_width": 8, "depth": 3, "last_skip": False, "norm": "group"}
    cfg = UNetConfig.from_dict(old)
    assert (cfg.upsample, cfg.padding_mode, cfg.channels_per_group) == ("transpose", "zeros", None)
    model = UNet(cfg)
    assert isinstance(model.decoders[0].up, torch.nn.ConvTranspose2d)
    assert model.encoders[0][1].num_groups == 8  # gcd(8, 8): the old rule (InstanceNorm here)
    new = UNet(UNetConfig(base_width=8, depth=3, norm="group"))
    assert new.encoders[0][1].num_groups == 1 and new.bottleneck[1].num_groups == 8
    assert UNetConfig.from_dict(new.config.to_dict()) == new.config
    # a record from before the norm setting existed: GroupNorm, what it was built with
    legacy = {"in_channels": 3, "base_width": 8, "depth": 3, "last_skip": False}
    assert UNetConfig.from_dict(legacy).norm == "group"
    assert UNetConfig().norm == "batch"  # new models: window-independent (issue 12)


@pytest.mark.parametrize("c,cpg,groups", [(8, 8, 1), (16, 8, 2), (24, 8, 3), (20, 8, 2),
                                          (4, 8, 1), (64, 4, 16), (12, None, 4)])
def test_group_count(c: int, cpg: int | None, groups: int) -> None:
    assert group_count(c, cpg) == groups
    assert cpg is None or c // groups >= min(c, 4)


def _checker(y: torch.Tensor) -> float:
    """Energy of the 2x2-periodic part of y (N,C,H,W), relative to its variance."""
    n, c, h, w = y.shape
    cells = y.reshape(n, c, h // 2, 2, w // 2, 2).mean(dim=(2, 4))  # (N,C,2,2)
    periodic = cells - cells.mean(dim=(2, 3), keepdim=True)
    return float(periodic.pow(2).mean() / y.var().clamp_min(1e-12))


def _smooth(n: int, g: torch.Generator) -> torch.Tensor:
    return torch.nn.functional.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=32,
                                           mode="bicubic", align_corners=False).clamp(0, 1)


def _fit(cfg: UNetConfig, steps: int = 25) -> UNet:
    """A few reconstruction steps on smooth random images (brief training)."""
    g = torch.Generator().manual_seed(0)
    model = UNet(cfg, generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        x = _smooth(4, g)
        loss = (model(x).reconstruction - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_no_checkerboard_and_no_fixed_position_bias_after_brief_training() -> None:
    """The transposed-conv, zero-padded UNet paints a 2x2 checkerboard and a border pattern
    (its output on a constant image varies with position); bilinear + reflect does neither."""
    torch.set_num_threads(1)
    legacy = _fit(UNetConfig(base_width=8, depth=2, upsample="transpose", padding_mode="zeros",
                             channels_per_group=None))  # fmt: skip
    new = _fit(UNetConfig(base_width=8, depth=2))
    flat = torch.full((1, 3, 32, 32), 0.6)
    with torch.no_grad():
        old_out, new_out = legacy(flat).reconstruction, new(flat).reconstruction
        x = _smooth(4, torch.Generator().manual_seed(5))  # held out: no period-2 content
        old_rec, new_rec = legacy(x).reconstruction, new(x).reconstruction
    # fixed position: a constant input gives a constant output, corners included
    assert float(new_out.std(dim=(2, 3)).max()) < 1e-5
    assert float(old_out.std(dim=(2, 3)).max()) > 1e-3
    # checkerboard: the period-2 energy of the reconstruction of a smooth image
    assert _checker(x) < 1e-3
    assert _checker(new_rec) < 0.2 * _checker(old_rec), (_checker(new_rec), _checker(old_rec))


def test_batch_norm_eval_output_does_not_depend_on_the_window() -> None:
    """Eval-mode BatchNorm is a fixed per-channel map: a pixel's output depends only on its
    receptive field, so a large tile predicts what its sub-windows do (GroupNorm does not)."""
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    for norm, same in (("batch", True), ("group", False)):
        model = UNet(UNetConfig(base_width=4, depth=2, norm=norm),
                     generator=torch.Generator().manual_seed(0)).eval()  # fmt: skip
        with torch.no_grad():  # a 96 px window inside the 128 px tile; 40 px margins
            big = model(x).reconstruction[..., 56:72, 56:72]
            small = model(x[..., 16:112, 16:112]).reconstruction[..., 40:56, 40:56]
        assert torch.allclose(big, small, atol=1e-6) is same, norm
