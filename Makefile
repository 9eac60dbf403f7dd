# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Both create .venv and install lymph into it (torch pinned to the CPU wheel first, so pip does
# not pull a multi-GB CUDA build; pyproject.toml keeps the open range for real users).
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.lymph-installed
DEMO   ?= demo_out

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

# The demo runs every stage on a synthetic world at pyramid level 2 (~1 um/px, 4x coarser than
# CAMELYON16's 40x), with a width-8 UNet and short schedules, so that it ends in about 15 minutes
# on a 2-core CPU. The same commands with their defaults are the paper's scale (a GPU's job).
SYNTH_ARGS = --size 8000x6000 --workers 2
DEMO_MODEL = --batch-size 16 --base-width 8 --crop 96 --workers 1

demo: $(STAMP)
	@echo "== 1/8 synthetic slides: a training world and a separate test world"
	$(BIN)/lymph synth --out $(DEMO)/slides --tumor 5 --normal 2 --seed 0 $(SYNTH_ARGS)
	$(BIN)/lymph synth --out $(DEMO)/test_slides --tumor 2 --normal 1 --seed 1 $(SYNTH_ARGS)
	@echo "== 2/8 extract class-balanced patches into Zarr stores (training world, test world)"
	$(BIN)/lymph extract --slides $(DEMO)/slides --out $(DEMO)/store.zarr \
	    --labels $(DEMO)/slides/reference.csv --level 2 --patch-size 128 --patches-per-slide 128
	$(BIN)/lymph extract --slides $(DEMO)/test_slides --out $(DEMO)/test_store.zarr \
	    --labels $(DEMO)/test_slides/reference.csv --level 2 --patch-size 128 --patches-per-slide 128
	$(BIN)/lymph info $(DEMO)/store.zarr
	@echo "== 3/8 pretrain: reconstruction, last skip connection removed"
	$(BIN)/lymph train --store $(DEMO)/store.zarr --out $(DEMO)/runs/pretrain --stage pretrain \
	    --steps 400 --eval-every 100 $(DEMO_MODEL)
	@echo "== 4/8 fine-tune on 200 labeled patches (segmentation + reconstruction)"
	$(BIN)/lymph train --store $(DEMO)/store.zarr --out $(DEMO)/runs/finetune --stage finetune \
	    --init $(DEMO)/runs/pretrain/last.pt --labeled 200 --steps 400 --eval-every 50 $(DEMO_MODEL)
	@echo "== 5/8 pixel metrics on the unseen test slides' patches (thresholds chosen on a held-out one)"
	$(BIN)/lymph eval --store $(DEMO)/test_store.zarr --checkpoint $(DEMO)/runs/finetune/best.pt \
	    --threshold auto --out $(DEMO)/eval --figures
	@echo "== 6/8 whole-slide tumor maps of the unseen test slides"
	$(BIN)/lymph predict --slides $(DEMO)/test_slides --checkpoint $(DEMO)/runs/finetune/best.pt \
	    --out $(DEMO)/maps
	@echo "== 7/8 CAMELYON16 scoring of the maps: lesion FROC and slide AUC"
	$(BIN)/lymph eval --slides $(DEMO)/test_slides --predictions $(DEMO)/maps --out $(DEMO)/maps/eval
	@echo "== 8/8 the paper's Figure 3: with vs without pretraining, 5-fold CV by slide"
	$(BIN)/lymph study --store $(DEMO)/store.zarr --pretrained $(DEMO)/runs/pretrain/last.pt \
	    --out $(DEMO)/study --quick --folds 5
	@echo "== done. Look at: $(DEMO)/runs/*/loss.png, $(DEMO)/eval/*.png, $(DEMO)/maps/*_overlay.png,"
	@echo "   $(DEMO)/maps/eval/froc.png, $(DEMO)/study/table.md and $(DEMO)/study/f1_vs_size.png"

clean:
	rm -rf $(VENV) $(DEMO) bench_out .pytest_cache .ruff_cache *.egg-info
