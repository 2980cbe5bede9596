# Two entry points: `make demo` (the main job) and `make test`. Each builds .venv from nothing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint bench data clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU build from local disk first, so the package's torch>=2.4 is already met.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	MPLBACKEND=Agg $(BIN)/unrolled demo --out results/demo

test: $(STAMP)
	MPLBACKEND=Agg $(BIN)/python -m pytest tests

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

bench: $(STAMP)
	$(BIN)/unrolled bench

# Optional offline data: Fashion-MNIST (IDX) at /usr/share/datasets/fashion-mnist, where
# unrolled.data.images.load_fashion_mnist and `unrolled reproduce sulam-classify` look by default.
data:
	@if [ "$$(id -u)" != 0 ]; then \
		echo "make data installs the Debian package dataset-fashion-mnist: run it as root (sudo make data)" >&2; \
		exit 1; \
	fi
	apt-get install -y dataset-fashion-mnist

clean:
	rm -rf $(VENV) results build src/*.egg-info
