"""The paper's Figure 4 from any checkpoint, the pretraining one included.

The paper's Figure 4 shows the *pretrained* UNet's reconstructions. `lymph eval patches`
refuses a pretraining checkpoint for scores (its segmentation head is untrained), so it drew
Figure 4 from the fine-tuned checkpoint only, whose reconstruction erases tumor nests (MSE
0.0120 against 0.0055 for the pretraining checkpoint on the same patches). With ``--figures
--out DIR`` a pretraining checkpoint now draws Figure 4 alone: inputs, reconstructions and
their difference, half the patches tumor where the store has labels, seeded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

N_PATCHES = 8


def pick_patches(store: Any, rng: np.random.Generator, *, n: int = N_PATCHES,
                 slides: Sequence[str] | None = None) -> list[tuple[str, int]]:
    """(slide id, patch index) of ``n`` patches drawn with ``rng``: half of them tumor-labeled
    where the store has tumor patches (the nests a reconstruction may erase), the rest from
    every patch of every slide (unlabeled ones too)."""
    infos = [s for s in store.slides if s.n_patches and (not slides or s.slide_id in slides)]
    if not infos:
        return []
    tumor = [(s.slide_id, int(i)) for s in infos if s.labeled and s.n_tumor
             for i in np.flatnonzero(store.labels(s.slide_id) == 1)]
    picks: list[tuple[str, int]] = []
    if tumor:
        for k in rng.choice(len(tumor), size=min(n // 2, len(tumor)), replace=False):
            picks.append(tumor[int(k)])
    sizes = np.array([s.n_patches for s in infos], dtype=float)
    tries = 0
    while len(picks) < n and tries < 50 * n:
        tries += 1
        s = infos[int(rng.choice(len(infos), p=sizes / sizes.sum()))]
        pick = (s.slide_id, int(rng.integers(s.n_patches)))
        if pick not in picks:
            picks.append(pick)
    return picks


def draw_figure4(store: Any, model: Any, *, out: Path, seed: int, device: Any = "cpu",
                 batch_size: int = 16, stage: str | None = None, name: str = "",
                 slides: Sequence[str] | None = None, n: int = N_PATCHES) -> dict[str, Any]:
    """Write ``out/figure4_reconstruction.png``; returns the per-patch and mean MSE (0-1
    intensities) and the file."""
    from lymph.model.figures import figure_reconstructions
    from lymph.model.infer import reconstruct

    picks = pick_patches(store, np.random.default_rng(seed), n=n, slides=slides)
    if not picks:
        return {"recon_mse": None, "n_patches": 0, "files": {}}
    images = np.stack([store.read(sid, i, i + 1, masks=False).images[0] for sid, i in picks])
    recon = reconstruct(model, images, device=device, batch_size=batch_size)
    diff = images.astype(np.float32) / 255 - recon.astype(np.float32) / 255
    mse = (diff**2).mean(axis=(1, 2, 3))
    labels = [f"{sid} #{i}\nMSE {m:.4f}" for (sid, i), m in zip(picks, mse, strict=True)]
    title = (f"Figure 4: reconstructions by the {stage or 'unknown-stage'} checkpoint {name}, "
             f"mean MSE {mse.mean():.4f} over {len(picks)} patches")
    path = figure_reconstructions(images, recon, Path(out) / "figure4_reconstruction.png",
                                  labels=labels, title=title)
    return {"recon_mse": float(mse.mean()), "recon_mse_per_patch": [float(m) for m in mse],
            "patches": [list(p) for p in picks], "n_patches": len(picks),
            "files": {"reconstructions": str(path)}}
