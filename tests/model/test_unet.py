from __future__ import annotations

import pytest
import torch

from lymph.data.errors import ConfigError
from lymph.model.unet import UNet, UNetConfig, UNetOutput


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
