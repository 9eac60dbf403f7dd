"""`run(EvalConfig)`: a checkpoint scored on a store's patches, end to end (and its CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lymph.data.errors import CheckpointError, ConfigError, StoreError
from lymph.data.store import PatchStore, create_store, write_slide
from lymph.model.checkpoint import save_checkpoint
from lymph.model.evaluate import EvalConfig, EvalResult, run
from lymph.model.infer import predict_probs
from lymph.model.metrics import binarize, pixel_counts
from lymph.model.unet import UNet, UNetConfig

P = 20  # not a multiple of the model's 4: exercises pad-and-crop at full patch size


def _slide_arrays(rng: np.random.Generator, n: int, tumor: bool):
    images = np.empty((n, P, P, 3), np.uint8)
    images[...] = (230, 170, 210)  # pink stroma
    masks = np.zeros((n, P, P), np.uint8)
    labels = np.zeros(n, np.uint8)
    if tumor:
        for i in range(0, n, 2):  # every other patch holds a dark-purple tumor blob
            y, x = rng.integers(0, P // 2, 2)
            masks[i, y : y + P // 2, x : x + P // 2] = 1
            labels[i] = 1
        images[masks == 1] = (90, 40, 140)
    images = np.clip(images + rng.integers(-12, 12, images.shape), 0, 255).astype(np.uint8)
    coords = np.stack([np.arange(n) * P, np.zeros(n, int)], axis=1).astype(np.int64)
    return dict(images=images, coords=coords, labels=labels, masks=masks)


def make_store(path: Path, slides: dict[str, str], *, n: int = 6, seed: int = 0) -> Path:
    """A tiny store: {slide_id: "tumor" | "normal" | "unlabeled"}."""
    rng = np.random.default_rng(seed)
    create_store(path, {"patch_size": P, "level": 0, "seed": seed, "patches_per_slide": n})
    for sid, status in slides.items():
        arrays = _slide_arrays(rng, n, status == "tumor")
        if status == "unlabeled":
            arrays.pop("labels")
            arrays.pop("masks")
        write_slide(path, sid, **arrays, attrs={"status": status, "source": f"{sid}.tif"})
    return path


def make_checkpoint(path: Path, *, store: Path | None = None, train_slides=(), val_slides=()):
    """A throwaway tiny UNet saved the way the trainer records its store and splits."""
    torch.manual_seed(0)  # only the weights of this throwaway model; the code under test
    model = UNet(UNetConfig(base_width=4, depth=2))  # never touches global RNGs
    store_settings = {"patch_size": P, "level": 0}
    if store is not None:
        store_settings = {**PatchStore.open(store).settings, "path": str(store)}
    save_checkpoint(
        path,
        model=model,
        config={
            "stage": "finetune",
            "store": store_settings,
            "splits": {"train": list(train_slides), "val": list(val_slides)},
        },
    )
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eval_world")
    store = make_store(
        root / "store.zarr",
        {"tumor_a": "tumor", "tumor_b": "tumor", "normal_a": "normal", "slide_x": "unlabeled"},
    )
    ckpt = make_checkpoint(root / "ckpt.pt")
    return {"root": root, "store": store, "ckpt": ckpt}


def _expected(store_path: Path, ckpt: Path, slides: list[str], threshold: float):
    from lymph.model.checkpoint import load_model

    model, _ = load_model(ckpt)
    store = PatchStore.open(store_path)
    total = None
    per = {}
    for sid in slides:
        batch = store.read(sid, 0, store.slide(sid).n_patches)
        probs = predict_probs(model, batch.images)
        assert probs.shape == batch.masks.shape  # full patch size, cropped back
        per[sid] = pixel_counts(binarize(probs, threshold), batch.masks)
        total = per[sid] if total is None else total + per[sid]
    return total, per


def test_fixed_threshold_json_keys_and_counts(world: dict[str, Path]) -> None:
    typed = run(EvalConfig(store=world["store"], checkpoint=world["ckpt"], threshold=0.5,
                           batch_size=4))
    assert isinstance(typed, EvalResult) and typed.files == {}
    res = typed.to_dict()
    assert typed.counts is not None and typed.counts.to_dict()["f1"] == res["f1"]
    assert (typed.threshold, typed.n_slides, typed.n_patches) == (0.5, 3, 18)
    assert typed.average_precision == res["average_precision"]
    assert typed.checkpoint_stage == res["checkpoint_stage"] == "finetune"
    for key in ("precision", "recall", "f1", "dice", "iou", "slides", "threshold"):
        assert key in res
    # scores every labeled slide, never the unlabeled one
    assert sorted(res["slides"]) == ["normal_a", "tumor_a", "tumor_b"]
    pooled, per = _expected(world["store"], world["ckpt"], sorted(res["slides"]), 0.5)
    assert (res["tp"], res["fp"], res["fn"], res["tn"]) == (
        pooled.tp,
        pooled.fp,
        pooled.fn,
        pooled.tn,
    )
    assert res["f1"] == pytest.approx(pooled.f1)
    for sid, counts in per.items():
        assert res["slides"][sid]["f1"] == pytest.approx(counts.f1)
        assert res["slides"][sid]["n_patches"] == 6
    assert res["n_patches"] == 18
    json.dumps(res)  # JSON-ready
    for key in ("precision", "recall", "f1", "dice", "iou"):
        assert 0.0 <= res[key] <= 1.0


def test_auto_threshold_never_scores_validation_slides(world: dict[str, Path]) -> None:
    out = world["root"] / "auto"
    res = run(
        EvalConfig(
            store=world["store"],
            checkpoint=world["ckpt"],
            threshold="auto",
            out=out,
            figures=True,
            n_figure_patches=4,
            bins=101,
            seed=3,
        )
    ).to_dict()
    val = res["validation"]["slides"]
    assert val and not set(val) & set(res["slides"])
    assert any(s.startswith("tumor") for s in val)  # a tumor slide picks the thresholds
    assert res["threshold_mode"] == "auto"
    assert res["threshold"] == res["validation"]["f1_best_threshold"]
    assert 0.0 <= res["validation"]["recall_0.9_threshold"] <= 1.0
    assert res["validation"]["at_recall_0.9"]["recall"] >= 0.9
    assert "at_recall_0.9_threshold" in res
    for name in (
        "pr_curve.png",
        "metrics.json",
        "figure4_reconstruction.png",
        "figure5_segmentation.png",
    ):
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "metrics.json").read_text())["f1"] == res["f1"]
    assert res["precision_used"] in ("fp32", "bf16") and res["config"]["precision"] == "auto"
    assert isinstance(res["precision"], float)  # the pixel metric, not the --precision


def test_auto_uses_checkpoint_validation_slides(world: dict[str, Path]) -> None:
    ckpt = make_checkpoint(
        world["root"] / "ck_val.pt",
        store=world["store"],
        train_slides=["tumor_b"],
        val_slides=["tumor_a"],
    )
    with pytest.warns(UserWarning, match="used to train this checkpoint"):
        res = run(EvalConfig(store=world["store"], checkpoint=ckpt, threshold="auto",
                             bins=101)).to_dict()
    assert res["validation"]["slides"] == ["tumor_a"]
    assert res["validation"]["source"] == "checkpoint"
    assert sorted(res["slides"]) == ["normal_a", "tumor_b"]


def test_recorded_slides_of_another_store_are_ignored(world: dict[str, Path], tmp_path) -> None:
    other = make_store(tmp_path / "other.zarr", {"tumor_a": "tumor"}, n=3, seed=9)
    ckpt = make_checkpoint(
        tmp_path / "ck_other.pt", store=other, train_slides=["tumor_b"], val_slides=["tumor_a"]
    )
    res = run(EvalConfig(store=world["store"], checkpoint=ckpt, threshold="auto",
                         bins=101)).to_dict()  # no leak warning
    assert res["validation"]["source"].startswith("seeded split")
    assert res["notes"] == []


def test_auto_rejects_scoring_the_validation_slides(world: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="both choose the threshold and be scored"):
        run(
            EvalConfig(
                store=world["store"],
                checkpoint=world["ckpt"],
                threshold="auto",
                slides=("tumor_a",),
                val_slides=("tumor_a",),
            )
        )


def test_not_a_checkpoint(world: dict[str, Path]) -> None:
    bogus = world["root"] / "bogus.pt"
    bogus.write_bytes(b"definitely not a torch file")
    with pytest.raises(CheckpointError, match="cannot be read"):
        run(EvalConfig(store=world["store"], checkpoint=bogus))


def test_store_without_labels(tmp_path: Path, world: dict[str, Path]) -> None:
    store = make_store(tmp_path / "u.zarr", {"slide_u": "unlabeled"})
    with pytest.raises(StoreError, match="holds no labeled slide"):
        run(EvalConfig(store=store, checkpoint=world["ckpt"]))


def test_unlabeled_slide_requested(world: dict[str, Path]) -> None:
    with pytest.raises(StoreError, match="slide 'slide_x' is unlabeled"):
        run(EvalConfig(store=world["store"], checkpoint=world["ckpt"], slides=["slide_x"]))


def test_unknown_slide_requested(world: dict[str, Path]) -> None:
    with pytest.raises(StoreError, match="no complete slide 'nope'"):
        run(EvalConfig(store=world["store"], checkpoint=world["ckpt"], slides=["nope"]))


def test_cli_eval_json(world: dict[str, Path]) -> None:
    from click.testing import CliRunner

    from lymph.cli import main

    result = CliRunner().invoke(
        main,
        [
            "eval",
            "patches",
            "--store",
            str(world["store"]),
            "--checkpoint",
            str(world["ckpt"]),
            "--json",
            "--device",
            "cpu",
            "--slide-id",
            "tumor_a",
            "--threshold",
            "0.5",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {"precision", "recall", "f1", "dice", "iou", "slides"} <= set(data)
    assert list(data["slides"]) == ["tumor_a"]


def test_cli_eval_table(world: dict[str, Path]) -> None:
    from click.testing import CliRunner

    from lymph.cli import main

    result = CliRunner().invoke(
        main,
        [
            "eval",
            "patches",
            "--store",
            str(world["store"]),
            "--checkpoint",
            str(world["ckpt"]),
            "--threshold",
            "0.4",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "POOLED" in result.stdout and "threshold 0.400" in result.stdout


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["patches", "--store", "{store}"], "Missing option '--checkpoint'", 2),
        (
            ["patches", "--store", "{store}", "--checkpoint", "{ckpt}", "--predictions", "{root}"],
            "No such option",
            2,
        ),
        (["slides", "--predictions", "{root}"], "Missing option '--slides'", 2),
        (
            ["slides", "--slides", "{root}", "--predictions", "{root}", "--figures"],
            "No such option",
            2,
        ),
        (
            ["patches", "--store", "{store}", "--checkpoint", "{ckpt}", "--threshold", "best"],
            "neither a number",
            2,
        ),
        (["patches", "--store", "{store}", "--checkpoint", "{ckpt}", "--figures"],
         "--out DIR with", 2),
        (["--store", "{store}", "slides"], "No such option", 2),
        (["patches", "--slides", "{root}"], "No such option", 2),
    ],
)
def test_cli_eval_bad_modes(
    world: dict[str, Path], args: list[str], message: str, code: int
) -> None:
    from click.testing import CliRunner

    from lymph.cli import main

    args = [a.format(**{k: str(v) for k, v in world.items()}) for a in args]
    result = CliRunner().invoke(main, ["eval", *args])
    assert result.exit_code == code, result.output
    assert message in result.output


def test_a_pretraining_checkpoint_is_refused(world: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "pre.pt"
    save_checkpoint(path, model=UNet(UNetConfig(base_width=4, depth=2)),
                    config={"stage": "pretrain", "store": {"patch_size": P, "level": 0}})
    with pytest.raises(CheckpointError, match=r"pre.pt is a pretraining checkpoint, not a fine"):
        run(EvalConfig(store=world["store"], checkpoint=path))
    with pytest.raises(CheckpointError, match=r"or pass --figures --out DIR to draw its Figure 4"):
        run(EvalConfig(store=world["store"], checkpoint=path, out=tmp_path / "no_figures"))


def test_a_checkpoint_that_records_no_stage_is_refused(world: dict[str, Path],
                                                      tmp_path: Path) -> None:
    """One rule for every reader (``checkpoint.require_finetuned``): no stage, no scores."""
    path = tmp_path / "nostage.pt"
    save_checkpoint(path, model=UNet(UNetConfig(base_width=4, depth=2)),
                    config={"store": {"patch_size": P, "level": 0}})
    with pytest.raises(CheckpointError, match=r"nostage.pt records no stage, not a fine-tuned"):
        run(EvalConfig(store=world["store"], checkpoint=path))


def test_a_pretraining_checkpoint_draws_figure4_alone(world: dict[str, Path],
                                                      tmp_path: Path) -> None:
    """The paper's Figure 4 is the pretrained UNet's: with --figures --out a pretraining
    checkpoint gives it (inputs, reconstructions, difference) and the MSE, no scores."""
    from click.testing import CliRunner

    from lymph.cli import main

    path = tmp_path / "pre.pt"
    save_checkpoint(path, model=UNet(UNetConfig(base_width=4, depth=2)),
                    config={"stage": "pretrain", "store": {"patch_size": P, "level": 0}})
    typed = run(EvalConfig(store=world["store"], checkpoint=path, figures=True,
                           out=tmp_path / "fig", seed=3))
    assert typed.counts is None and typed.threshold is None and typed.n_patches == 8
    result = typed.to_dict()
    assert "f1" not in result and result["checkpoint_stage"] == "pretrain"
    assert result["n_patches"] == 8 and 0 < result["recon_mse"] < 1
    store = PatchStore.open(world["store"])
    tumor = [store.labels(sid)[i] for sid, i in result["patches"][:4]]
    assert tumor == [1, 1, 1, 1]  # half the patches tumor: the nests a reconstruction may erase
    assert len({tuple(p) for p in result["patches"]}) == 8
    assert (tmp_path / "fig" / "figure4_reconstruction.png").stat().st_size > 0
    saved = json.loads((tmp_path / "fig" / "metrics.json").read_text())
    assert saved["recon_mse"] == pytest.approx(result["recon_mse"])
    again = run(EvalConfig(store=world["store"], checkpoint=path, figures=True,
                           out=tmp_path / "fig2", seed=3)).to_dict()
    assert again["patches"] == result["patches"]  # seeded
    done = CliRunner().invoke(main, ["eval", "patches", "--store", str(world["store"]),
                                     "--checkpoint", str(path), "--figures", "--out",
                                     str(tmp_path / "cli")])
    assert done.exit_code == 0, done.output
    assert "8 patches reconstructed by the pretraining checkpoint: mean MSE" in done.output


def read_only_folder(tmp_path: Path) -> Path:
    """A folder lymph cannot write into: chmod 500 for a user; for root (whom permissions do not
    stop) a path under /sys, where the kernel refuses new files."""
    import os

    if os.geteuid() == 0:
        return Path("/sys/lymph-eval-out")
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    return out


def test_read_only_out_is_one_line_error(world: dict[str, Path], tmp_path: Path) -> None:
    from lymph.data.errors import OutputError

    out = read_only_folder(tmp_path)
    with pytest.raises(OutputError, match=r"cannot write .* not writable"):
        run(EvalConfig(store=world["store"], checkpoint=world["ckpt"], out=out))


def test_max_patches_per_slide_scores_a_seeded_sample(world: dict[str, Path]) -> None:
    from lymph.model.checkpoint import load_model
    from lymph.model.evaluate import sample_patches

    res = run(EvalConfig(store=world["store"], checkpoint=world["ckpt"], slides=["tumor_a"],
                         max_patches_per_slide=2, seed=4)).to_dict()
    assert res["n_patches"] == 2 and res["slides"]["tumor_a"]["n_patches"] == 2
    idx = sample_patches(6, 2, seed=4, slide_id="tumor_a")
    assert list(idx) == list(sample_patches(6, 2, seed=4, slide_id="tumor_a"))
    assert list(sample_patches(6, None, seed=4, slide_id="tumor_a")) == list(range(6))
    batch = PatchStore.open(world["store"]).read("tumor_a", 0, 6)
    model, _ = load_model(world["ckpt"])
    probs = predict_probs(model, batch.images[idx])
    expected = pixel_counts(binarize(probs, 0.5), batch.masks[idx])
    assert (res["tp"], res["fp"], res["fn"], res["tn"]) == (
        expected.tp,
        expected.fp,
        expected.fn,
        expected.tn,
    )


def test_eval_on_an_extracted_store(synth_store: Path, tmp_path: Path) -> None:
    """The real pipeline's store (300 px patches from `lymph extract`) scores at full size."""
    ckpt = make_checkpoint(tmp_path / "ck.pt", store=synth_store)
    res = run(EvalConfig(store=synth_store, checkpoint=ckpt, max_patches_per_slide=4,
                         batch_size=4)).to_dict()
    assert sorted(res["slides"]) == ["normal_001", "tumor_001"]
    assert res["n_patches"] == 8
    assert res["tp"] + res["fp"] + res["fn"] + res["tn"] == 8 * 300 * 300
    assert res["slides"]["normal_001"]["tp"] + res["slides"]["normal_001"]["fn"] == 0


def test_warns_when_checkpoint_patches_differ(synth_store: Path, tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "ck20.pt")  # trained on 20 px patches
    with pytest.warns(UserWarning, match="patch_size=20, this store has patch_size=300"):
        run(EvalConfig(store=synth_store, checkpoint=ckpt, slides=["tumor_001"],
                       max_patches_per_slide=1))


def test_cli_eval_slide_mode(synth_world: Path, tmp_path: Path) -> None:
    """Slide mode hands the folders to camelyon.run and prints its JSON."""
    from click.testing import CliRunner

    from lymph.cli import main

    preds = tmp_path / "preds"
    preds.mkdir()
    (preds / "tumor_001.csv").write_text("0.9,2048,1536\n")
    (preds / "normal_001.csv").write_text("0.2,100,100\n")
    (preds / "scores.csv").write_text("tumor_001,0.9\nnormal_001,0.2\n")
    result = CliRunner().invoke(
        main,
        [
            "eval",
            "slides",
            "--slides",
            str(synth_world),
            "--predictions",
            str(preds),
            "--json",
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {"froc", "froc_lymph", "froc_stepwise", "sensitivity_at", "auc"} <= set(data)
    assert data["auc"] == pytest.approx(1.0)  # the tumor slide scores above the normal one
    assert (tmp_path / "out" / "metrics.json").exists()
