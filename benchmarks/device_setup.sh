#!/usr/bin/env bash
# Prepare a GPU machine that has torch + transformers but lacks lem's light dependencies:
# install the wheels carried in .whl/ (msgspec, pyzmq, structlog and a lem wheel built with
# `pip wheel --no-deps -w .whl .`) into /tmp/site. Source it: `. benchmarks/device_setup.sh`.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || return 1
export PYTHONPATH=/tmp/site
export PATH=/tmp/site/bin:$PATH
export PYTHONUNBUFFERED=1
