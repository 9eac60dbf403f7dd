"""The `lymph` command line. Commands only parse arguments, build a config and call one
library function; all the work lives in `lymph.pipeline`, `lymph.model` and `lymph.data`."""

from __future__ import annotations

import click

from lymph import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="lymph")
def main() -> None:
    """Find breast-cancer metastases in gigapixel lymph-node slides with very few pixel labels.

    \b
    A typical run:
      lymph synth   --out slides/                 # or bring CAMELYON16
      lymph extract --slides slides/ --out store.zarr
      lymph train   --store store.zarr --out runs/pre --stage pretrain
      lymph train   --store store.zarr --out runs/ft --stage finetune --init runs/pre/last.pt
      lymph eval    --store store.zarr --checkpoint runs/ft/best.pt
      lymph predict --slides slides/ --checkpoint runs/ft/best.pt --out maps/
    """


# --- synth (data/synth.py) ---------------------------------------------------------------------

# --- extract, info (pipeline/) -----------------------------------------------------------------

# --- train (model/train.py) --------------------------------------------------------------------

# --- eval, study (model/metrics.py, model/study.py) --------------------------------------------

# --- predict (model/predict.py, model/camelyon.py) ---------------------------------------------


if __name__ == "__main__":  # `python -m lymph.cli` (torchrun uses this)
    main()
