# The README's commands: `make demo` (train + evaluate on the embedded dataset, CPU) and
# `make test` (the full test suite). Both install into $(VENV) first when needed.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.install-stamp
INSTALL_INPUTS := requirements.txt setup.cfg pyproject.toml tools/install.py \
	tools/detectron2_dist/setup.py tools/detectron2_dist/_C.py
DEMO_CONFIG ?= configs/shapes/faster_rcnn_R_18_FPN.yaml

.PHONY: install demo test clean

install: $(STAMP)

$(STAMP): $(INSTALL_INPUTS)
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) tools/install.py
	touch $@

# Trains the baseline Faster R-CNN from scratch on shapes_train and prints the COCO AP
# table on shapes_val. --resume: running it again continues or re-evaluates the same run.
demo: install
	@start=$$(date +%s); \
	$(PYTHON) train_net.py --config-file $(DEMO_CONFIG) --resume && \
	echo "demo: wall time $$(( $$(date +%s) - start )) s"

test: install
	$(PYTHON) -m pytest tests

clean:
	rm -rf output build *.egg-info
