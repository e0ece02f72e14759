# The two commands of the README: `make demo` and `make test`. Both create .venv and install
# the project into it first (`make install` does that alone). Needs python3 >= 3.10 on PATH.
PYTHON ?= python3
# Python caches compiled byte code of what it imports (torch, MONAI, OpenVINO...): a machine
# that sets PYTHONDONTWRITEBYTECODE would recompile them in every new process (40-47 s of CPU
# each, measured: every subprocess a test starts), as the install runs pip --no-compile.
unexport PYTHONDONTWRITEBYTECODE
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo demo-bundle test lint docs bench-gate bench-baseline trt-compile serve-install triton-smoke clean

install: $(STAMP)

# --no-compile: pip would byte-compile every installed module (torch, nnU-Net, OpenVINO...);
# Python compiles only what is imported, on first import, and caches it.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-compile -e ".[dev]"
	touch $(STAMP)

demo: install
	$(VENV)/bin/medseg demo

# The committed demo bundle models/mni152-tissue/bundle: the committed model.pt re-exported
# through the sliding-window path (schema 2, patch 224x256 at 1 mm; FP32, FP16, INT8 and
# whatever else the export writes). Re-run after a change to the export, then commit it.
DEMO_DATA := demo-output/mni152

demo-bundle: install
	mkdir -p demo-output
	$(VENV)/bin/medseg data mni152 $(DEMO_DATA) --force
	$(VENV)/bin/medseg demo-bundle --data $(DEMO_DATA) --out models/mni152-tissue/bundle

lint: install
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks
	$(PY) -m mypy

# The documentation site (mkdocs.yml, pages in docs/): --strict fails on a broken link or
# anchor, a page missing from the nav, or any other warning. A few seconds; `make test` runs it.
# NO_MKDOCS_2_WARNING silences Material's end-of-life banner (not a build warning).
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir demo-output/site

# Two pytest workers (pytest-xdist): most tests wait on a
# subprocess, a server or single-threaded Python, so two halve the wall time on 2 cores.
# A worker that dies (it happened once per full run on 2026-12-07, with no Python traceback,
# cause not found) is replaced and its test run once more (pytest-rerunfailures; only crashed
# tests, an ordinary failure is not re-run; -raR names it in the summary). --dist load:
# --dist loadfile cannot reschedule a crashed test, and a replaced loadfile worker left the
# controller waiting for ever.
# pytest exits 5 when it collected no test: that is a failure here, not a pass. serve-install
# first, so the tests that start a real tritonserver run instead of skipping.
test: lint docs serve-install
	@$(PY) -m pytest -n 2 --dist load --max-worker-restart 4 --reruns 1 --only-rerun "crashed" \
		--durations=25 -raR; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$rc

# The CI gate on Dice and milliseconds (.ci/run runs it after `make test`): the committed demo
# bundle on ONNX Runtime CPU against benchmarks/gates/ci-cpu.toml and the committed baseline.
BENCH_DATA := demo-output/ci-mni152
BENCH_ARGS := models/mni152-tissue/bundle --data $(BENCH_DATA) --backends onnxruntime,openvino \
	--repeats 3 --threads 2
# The baseline is recorded for every CPU precision at both batches with more calls; the gate
# runs FP32/BF16/INT8 at batch 8 with fewer calls (each row compares with the baseline row of
# the same backend, precision and batch) to keep .ci/run under 20 minutes on the 2-core CI
# machine. FP16 is a GPU precision: its file's accuracy is checked at export and by the tests.
BASELINE_TIMING := --precisions fp32,fp16,bf16,int8 --batch 1,8 --warmup 2 --iters 10
GATE_TIMING := --precisions fp32,bf16,int8 --batch 8 --warmup 1 --iters 5

$(BENCH_DATA): | install
	mkdir -p demo-output
	$(VENV)/bin/medseg data mni152 $(BENCH_DATA) --force

bench-gate: install $(BENCH_DATA)
	$(VENV)/bin/medseg bench $(BENCH_ARGS) $(GATE_TIMING) --gate benchmarks/gates/ci-cpu.toml \
		--baseline benchmarks/baselines/ci-cpu.json --report demo-output/ci-bench

# A real TensorRT builder on every CI run: TensorRT-RTX (no GPU needed) parses and builds the
# committed demo bundle's three precisions; any parse or build error (the refused ONNX node is
# named) fails the target. Plans go to the bundle's engines/rtx-*/ (git-ignored).
trt-compile: install
	$(VENV)/bin/medseg build models/mni152-tissue/bundle --runtime tensorrt-rtx --precision all

# Re-record the baseline (on an idle machine like CI's), then commit the JSON.
bench-baseline: install $(BENCH_DATA)
	$(VENV)/bin/medseg bench $(BENCH_ARGS) $(BASELINE_TIMING) --baseline benchmarks/baselines/ci-cpu.json \
		--update-baseline --report benchmarks/results/cpu-demo-bundle

# Triton: the serve extra's clients, and the tritonserver binary of nvidia-pytriton installed
# without its dependencies (it pins numpy<2; medseg's segmenter model passes tensors to the
# Python backend's stub by DLPack, so no numpy ABI crosses it). `make triton-smoke` (.ci/run)
# serves the demo bundle on 127.0.0.1 and checks it end to end, under load and faults.
SERVE_STAMP := $(VENV)/.serve-installed

serve-install: $(SERVE_STAMP)

$(SERVE_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --no-compile -e ".[serve]"
	$(PY) -m pip install --quiet --no-compile --no-deps nvidia-pytriton==0.7.0
	touch $(SERVE_STAMP)

triton-smoke: serve-install $(BENCH_DATA)
	$(PY) benchmarks/triton_smoke.py --data $(BENCH_DATA) --out demo-output/triton-smoke --requests 100

clean:
	rm -rf $(VENV) demo-output .pytest_cache .mypy_cache .ruff_cache
