# Source me on a CUDA machine that has torch but no install of this project: assembles the
# package namespace pyproject.toml declares under /tmp/ns (training/ -> anyecg_edge.training,
# ...) and installs any wheels carried in .whl/ (e.g. peft, wfdb) into /tmp/site.
# Run python from outside the repo root afterwards: with the root as cwd, `python -m`
# would import the unmapped source tree first.
mkdir -p /tmp/ns
rm -rf /tmp/ns/anyecg_edge && cp -r anyecg_edge /tmp/ns/
for pkg in training quantization firmware_bridge benchmarks; do ln -sfn "$PWD/$pkg" "/tmp/ns/anyecg_edge/$pkg"; done
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/ns:/tmp/site
else
  export PYTHONPATH=/tmp/ns
fi
export PYTHONUNBUFFERED=1
