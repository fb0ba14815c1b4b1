#!/usr/bin/env bash
# Build every polyvec image with the project's one tag scheme, and optionally push them.
#
#   scripts/build-images.sh                          # all images, CPU and CUDA variants
#   scripts/build-images.sh --push registry.example.com/team
#                                                    # ... tagged under that registry, then pushed
#   scripts/build-images.sh --variants cpu --images gateway,all-minilm-l6-v2
#   scripts/build-images.sh --dry-run                # print the docker commands only
#
# Tags (VERSION is pyproject.toml's version, which is also the Helm chart's appVersion and the
# default tag in docker-compose.yml):
#   [REGISTRY/]polyvec/gateway:VERSION                  the gateway (no model, no torch: CPU only)
#   [REGISTRY/]polyvec/inference-NAME:VERSION           one per inference-images/NAME (CPU torch)
#   [REGISTRY/]polyvec/inference-NAME:VERSION-cuda      the same Dockerfile on a CUDA base with CUDA torch
# The build context is the repository root. The CUDA build arguments are the ones docker-compose.yml
# uses for its gpu profile (tests/test_build_images.py checks they agree).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CUDA_BASE_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04
CUDA_TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

usage() {
  sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  echo
  echo "options:"
  echo "  --push REGISTRY     tag the images REGISTRY/polyvec/... and push them after building"
  echo "  --variants LIST     cpu,cuda (default both; the gateway has only cpu)"
  echo "  --images LIST       gateway and/or inference-images folder names (default: all)"
  echo "  --dry-run           print the docker commands instead of running them"
}

die() { echo "build-images.sh: $*" >&2; exit 2; }

registry="" push=0 dry_run=0 variants="cpu,cuda" images=""
while [ $# -gt 0 ]; do
  case "$1" in
    --push) [ $# -ge 2 ] && [ -n "$2" ] || die "--push needs a registry (e.g. registry.example.com/team)"
            registry=${2%/}; push=1; shift 2 ;;
    --variants) [ $# -ge 2 ] || die "--variants needs a list"; variants=$2; shift 2 ;;
    --images) [ $# -ge 2 ] || die "--images needs a list"; images=$2; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
case "$registry" in
  *://*) die "--push takes a registry name such as registry.example.com/team, not a URL: '$registry'" ;;
  *[[:space:]]*) die "--push: the registry name contains whitespace: '$registry'" ;;
esac

version=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$ROOT/pyproject.toml" | head -n 1)
[ -n "$version" ] || die "no version = \"...\" line in pyproject.toml"

want_cpu=0 want_cuda=0
IFS=, read -r -a variant_list <<< "$variants"
for v in "${variant_list[@]}"; do
  case "$v" in
    cpu) want_cpu=1 ;;
    cuda) want_cuda=1 ;;
    *) die "--variants: unknown variant '$v' (cpu, cuda)" ;;
  esac
done

all_images=(gateway)
for env_file in "$ROOT"/inference-images/*/model.env; do
  all_images+=("$(basename "$(dirname "$env_file")")")
done
if [ -n "$images" ]; then
  IFS=, read -r -a selected <<< "$images"
  for name in "${selected[@]}"; do
    found=0
    for known in "${all_images[@]}"; do [ "$name" = "$known" ] && found=1; done
    [ "$found" = 1 ] || die "--images: no image '$name' (known: ${all_images[*]})"
  done
else
  selected=("${all_images[@]}")
fi

prefix=""
[ -n "$registry" ] && prefix="$registry/"

run() {
  if [ "$dry_run" = 1 ]; then
    printf '%q ' "$@"; echo
  else
    "$@"
  fi
}

built=()
build() {  # build TAG DOCKERFILE [--build-arg ...]
  local tag=$1 dockerfile=$2
  shift 2
  echo "==> $tag" >&2
  run docker build -f "$ROOT/$dockerfile" -t "$tag" "$@" "$ROOT"
  built+=("$tag")
}

for name in "${selected[@]}"; do
  if [ "$name" = gateway ]; then
    [ "$want_cpu" = 1 ] && build "${prefix}polyvec/gateway:$version" gateway/Dockerfile
    continue
  fi
  dockerfile="inference-images/$name/Dockerfile"
  [ "$want_cpu" = 1 ] && build "${prefix}polyvec/inference-$name:$version" "$dockerfile"
  if [ "$want_cuda" = 1 ]; then
    build "${prefix}polyvec/inference-$name:$version-cuda" "$dockerfile" \
      --build-arg "BASE_IMAGE=$CUDA_BASE_IMAGE" \
      --build-arg "TORCH_INDEX_URL=$CUDA_TORCH_INDEX_URL" \
      --build-arg "ENABLE_CUDA=1"
  fi
done

[ "${#built[@]}" -gt 0 ] || die "nothing to build (the gateway has no cuda variant)"
if [ "$push" = 1 ]; then
  for tag in "${built[@]}"; do
    echo "==> push $tag" >&2
    run docker push "$tag"
  done
fi
echo "built ${#built[@]} image(s) for polyvec $version${registry:+ and pushed them to $registry}" >&2
