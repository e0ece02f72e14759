# syntax=docker/dockerfile:1
# medseg-edge, the whole toolkit on an x86-64 NVIDIA workstation: train, export (ONNX FP32/FP16
# /INT8 with nvidia-modelopt), build TensorRT engines, infer, bench, export-triton.
#
# Base image: nvcr.io/nvidia/tensorrt:26.08-py3 (NGC, catalog.ngc.nvidia.com/orgs/nvidia/
# containers/tensorrt): TensorRT 11.2.1, CUDA 13, Ubuntu 24.04, Python 3.12 (TensorRT container
# release notes: docs.nvidia.com/deeplearning/tensorrt/container-release-notes). For TensorRT 10
# (engines for a 10.x fleet) use nvcr.io/nvidia/tensorrt:25.01-py3 (TensorRT 10.8.0.43, CUDA
# 12.8, Python 3.12: Triton's release compatibility matrix lists the same TensorRT for 25.01):
#   docker build --build-arg BASE_IMAGE=nvcr.io/nvidia/tensorrt:25.01-py3 \
#     --build-arg CUDA_PYTHON="cuda-python>=12,<13" -t medseg-edge:trt10 .
# A TensorRT plan runs only on the TensorRT version that built it: build engines in the image
# whose TensorRT the serving side has.
#
# TensorRT comes from the image (its Python bindings are in the system site-packages, which
# the venv sees); `.[dev]` installs no PyPI tensorrt. torch is pinned in pyproject.toml
# (torch==2.13.0); on x86-64 pip gets its CUDA build from PyPI, several GB.
#
#   docker build -t medseg-edge .
#   docker run --rm --gpus all -v "$PWD/models:/data" medseg-edge build /data/mni152-tissue/bundle

ARG BASE_IMAGE=nvcr.io/nvidia/tensorrt:26.08-py3
FROM ${BASE_IMAGE}
# re-declared to use the value below the FROM line (in a label)
ARG BASE_IMAGE
# cuda-python's major version must match the image's CUDA (13 in 26.08, 12 in 25.01).
ARG CUDA_PYTHON="cuda-python>=13,<14"

LABEL org.opencontainers.image.title="medseg-edge" \
      org.opencontainers.image.description="medseg-edge toolkit: train, export ONNX FP32/FP16/INT8, TensorRT engines, runtime, benchmarks" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/medseg \
    PATH=/opt/medseg/bin:${PATH}

# apt packages follow the base image's own repositories, not pinned here
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/medseg-src
COPY pyproject.toml README.md ./
COPY src ./src

# versions come from pyproject.toml (a local project, not PyPI pins)
# hadolint ignore=DL3013
RUN python3 -m venv --system-site-packages "${VIRTUAL_ENV}" \
 && pip install --no-cache-dir ".[dev]" "${CUDA_PYTHON}" \
 && if pip list --local --format=freeze | grep -iE '^tensorrt[a-z0-9_-]*=='; then \
        echo "error: TensorRT must come from the base image, not PyPI" >&2; exit 1; \
    fi \
 && python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('tensorrt') is None)" \
 && medseg --help > /dev/null

RUN useradd --create-home --uid 10001 --user-group --shell /bin/bash medseg
USER 10001:10001
WORKDIR /home/medseg

ENTRYPOINT ["medseg"]
CMD ["--help"]
