#!/usr/bin/env bash
# Runs fuzz/fuzz_codec.py on one codec path. Usage: fuzz/run.sh compiled|numpy PYTHON [libFuzzer args]
#
# compiled: builds the C kernels with clang's fuzzer instrumentation (-fsanitize=fuzzer-no-link)
#   into build/fuzz, with a shared libFuzzer from clang's runtime preloaded so that the kernels'
#   coverage callbacks resolve; installs Debian's clang when it is missing and we are root, and
#   without clang fuzzes the installed kernels (compared with numpy all the same, but blind to
#   their coverage).
# numpy: the numpy implementation alone (SPLITRL_CODEC_KERNELS=numpy).
# New corpus entries go to build/fuzz/corpus-PATH; findings to build/fuzz/ (crash-*, timeout-*).
set -euo pipefail
path=${1:?usage: fuzz/run.sh compiled|numpy PYTHON [libFuzzer args]}
python=${2:?usage: fuzz/run.sh compiled|numpy PYTHON [libFuzzer args]}
shift 2
out=build/fuzz
mkdir -p "$out/corpus-$path"
run=("$python" fuzz/fuzz_codec.py "$out/corpus-$path" fuzz/seeds -artifact_prefix="$out/" "$@")
case "$path" in
numpy)
  SPLITRL_CODEC_KERNELS=numpy "${run[@]}"
  ;;
compiled)
  if ! command -v clang >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && apt-get install -y -qq clang) >&2
  fi
  if ! command -v clang >/dev/null; then
    echo "fuzz: clang is missing (apt-get install clang): the C kernels run uninstrumented" >&2
    "${run[@]}"
    exit
  fi
  CC=clang LDSHARED="clang -shared" CFLAGS="-fsanitize=fuzzer-no-link" \
    "$python" setup.py -q build_ext --force --build-lib "$out" --build-temp "$out/tmp" >&2
  clang++ -shared -o "$out/libfuzzer.so" -Wl,--whole-archive \
    "$(clang --print-runtime-dir)/libclang_rt.fuzzer_no_main-$(uname -m).a" \
    -Wl,--no-whole-archive -lpthread
  kernels=$(ls "$out"/splitrl/codecs/_kernels*.so)
  LD_PRELOAD="$PWD/$out/libfuzzer.so" SPLITRL_FUZZ_KERNELS="$kernels" "${run[@]}"
  ;;
*)
  echo "fuzz: unknown path $path (compiled or numpy)" >&2
  exit 2
  ;;
esac
