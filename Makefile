# rewind: the commands a fresh Debian 12 machine needs.
#
#   make demo    install what is missing, build, run scripts/demo.sh
#   make test    install what is missing, build, run the whole test suite
#   make bench   install what is missing, build, run bench/run.sh
#   make build   configure (RelWithDebInfo) and build into build/
#   make deps    install missing Debian packages (cheap when all are there)
#   make fuzz    build the libFuzzer targets (clang) and run each FUZZ_SECONDS
#   make asan    ASan+UBSan build into build-asan/, the test suite there
#   make tsan    TSan build into build-tsan/, the test suite there
#   make clean   remove the build directories and the demo store
#
# make test also builds the fuzz targets (build-fuzz/, clang): the suite
# runs each for 20 s (ctest label "fuzz").  The sanitizer runs are not part
# of make test (nor of .ci/run): see docs/reliability.md.
#
# The real build system is CMake (CMakeLists.txt); this file only strings the
# steps together.

BUILD_DIR  ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CTEST_JOBS ?= 2
FUZZ_SECONDS ?= 600

# cmake --build runs make again; without this every step of it would print
# "Entering directory ...".
MAKEFLAGS += --no-print-directory

.PHONY: all deps build test demo bench clean fuzz-build fuzz asan tsan

all: build

# No stamp file: install-deps.sh asks dpkg each time and returns at once
# when every package is installed.
deps:
	@scripts/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) >/dev/null
	cmake --build $(BUILD_DIR) -j$(JOBS)

# The fuzz targets are a clang build of their own (scripts/fuzz.sh); the
# short runs in ctest would build it too, but here it does not compete with
# the tests.
fuzz-build: deps
	scripts/fuzz.sh build

test: build fuzz-build
	ctest --test-dir $(BUILD_DIR) --output-on-failure -j$(CTEST_JOBS)

demo: build
	BUILD_DIR=$(BUILD_DIR) scripts/demo.sh

bench: build
	BUILD_DIR=$(BUILD_DIR) bench/run.sh

fuzz: deps
	scripts/fuzz.sh long $(FUZZ_SECONDS)

asan: deps
	CTEST_JOBS=$(CTEST_JOBS) scripts/sanitize.sh asan

tsan: deps
	CTEST_JOBS=$(CTEST_JOBS) scripts/sanitize.sh tsan

clean:
	rm -rf $(BUILD_DIR) build-fuzz build-asan build-tsan demo-store demo-restored.raw
