# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.edgert-installed

.PHONY: demo test bench soak zoo fuzz install clean board board-test board-down container-test

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstalls only when the project's dependencies change.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[convert,dev]'
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

# Every zoo architecture from every saved form to float32 and int8, beside the bare converter (an hour or so).
zoo: $(STAMP)
	$(PY) benchmarks/zoo.py --stages

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
