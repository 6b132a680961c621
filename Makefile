# The README's commands: `make demo` (train + evaluate on the embedded dataset, CPU) and
# `make test` (the full test suite). Both install into $(VENV) first when needed.
# `make test-upstream`: the full suite again on detectron2 main, built from the vendored tarball.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.install-stamp
INSTALL_INPUTS := requirements.txt setup.cfg pyproject.toml tools/install.py \
	tools/detectron2_dist/setup.py tools/detectron2_dist/_C.py
DEMO_CONFIG ?= configs/shapes/faster_rcnn_R_18_FPN.yaml
# the demo run's OUTPUT_DIR, passed to train_net.py and tools/visualize.py alike (default: the
# shapes configs' own, output/shapes/<config name>)
DEMO_OUTPUT ?= output/shapes/$(basename $(notdir $(DEMO_CONFIG)))

# detectron2 main's source (../shared/vendor on the project's machines; absent on a user's)
UPSTREAM_TARBALL ?= $(firstword $(wildcard ../shared/vendor/detectron2-main-*.tar.gz))
UPSTREAM_VENV ?= .venv-upstream
UPSTREAM_STAMP := $(UPSTREAM_VENV)/.detectron2-source

.PHONY: install demo test test-upstream gpu-smoke ablate clean

install: $(STAMP)

$(STAMP): $(INSTALL_INPUTS)
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) tools/install.py
	touch $@

# Trains the baseline Faster R-CNN from scratch on shapes_train and prints the COCO AP table on
# shapes_val, then draws the trained model's detections beside the ground truth and prints the
# picture's path ($(DEMO_OUTPUT)/visualize/detections.png). --resume: running it again
# continues or re-evaluates the same run.
demo: install
	@start=$$(date +%s); \
	$(PYTHON) train_net.py --config-file $(DEMO_CONFIG) --resume OUTPUT_DIR $(DEMO_OUTPUT) && \
	echo "demo: training and evaluation wall time $$(( $$(date +%s) - start )) s" && \
	$(PYTHON) tools/visualize.py --config-file $(DEMO_CONFIG) OUTPUT_DIR $(DEMO_OUTPUT) \
	    MODEL.WEIGHTS $(DEMO_OUTPUT)/model_final.pth

test: install
	$(PYTHON) -m pytest tests

# Trains and evaluates the shapes ablation groups with seeds 1, 2, 3, one run at a time, skipping
# runs already in docs/results/shapes.json, then prints the tables (docs/results.md). Resumable.
ablate: install
	$(PYTHON) tools/ablate.py $(ABLATE_ARGS)

# A few training iterations of every paper config at its real input size, AMP off and on, and
# the IoU-uniform generator's exactness check, on CUDA when present (docs/benchmarks.md).
gpu-smoke: install
	$(PYTHON) tools/gpu_smoke.py $(GPU_SMOKE_ARGS)

# Builds detectron2 main (compiled ops included) into $(UPSTREAM_VENV) once per tarball (the
# stamp holds the tarball's sha256), installs the project there through the `make install` path
# that keeps a user's own detectron2, then runs the full suite.
test-upstream:
	@if [ -z "$(UPSTREAM_TARBALL)" ]; then \
	  echo "test-upstream: skipped: no detectron2 main source (../shared/vendor/detectron2-main-*.tar.gz);" \
	       "set UPSTREAM_TARBALL=<detectron2 source .tar.gz> to run it"; exit 0; fi; \
	set -e; sum=$$(sha256sum "$(UPSTREAM_TARBALL)" | cut -d' ' -f1); \
	if [ "$$(cat $(UPSTREAM_STAMP) 2>/dev/null)" != "$$sum" ]; then \
	  echo "test-upstream: building detectron2 main from $(UPSTREAM_TARBALL) into $(UPSTREAM_VENV)"; \
	  rm -rf $(UPSTREAM_VENV); python3 -m venv $(UPSTREAM_VENV); \
	  $(UPSTREAM_VENV)/bin/python -m pip install -q -r requirements.txt; \
	  src=$$(mktemp -d); tar -xzf "$(UPSTREAM_TARBALL)" -C $$src --strip-components=1; \
	  (cd $$src && $(abspath $(UPSTREAM_VENV))/bin/python -m pip install -q \
	     --no-build-isolation --no-deps .); \
	  rm -rf $$src; \
	  $(UPSTREAM_VENV)/bin/python tools/install.py; \
	  echo "$$sum" > $(UPSTREAM_STAMP); fi; \
	$(UPSTREAM_VENV)/bin/python -m pytest tests

clean:
	rm -rf output build *.egg-info
