# Sourced by scripts/test_vulkan.sh and scripts/test_cuda.sh (from the repository root): creates or
# reuses the virtual environment $1 for a backend variant's build and test run, installs what the build
# and the suite's oracles need (the same pins as scripts/test.sh; the package itself is installed by
# the caller, with its own build options), and sets PY to its python.
minicpmo_backend_venv="$1"
if [ ! -x "$minicpmo_backend_venv/bin/python" ]; then
    echo "== creating the test venv $minicpmo_backend_venv"
    mkdir -p "$(dirname "$minicpmo_backend_venv")"
    "${PYTHON3:-python3}" -m venv "$minicpmo_backend_venv"
    "$minicpmo_backend_venv/bin/python" -m pip install -q --progress-bar off --upgrade pip
fi
PY="$minicpmo_backend_venv/bin/python"
echo "== installing build and test requirements into $minicpmo_backend_venv"
"$PY" -m pip install -q --progress-bar off "scikit-build-core>=0.10" "pybind11>=2.12" "torch==2.13.0"
"$PY" -m pip install -q --progress-bar off --no-deps "minicpmo-utils==1.0.7"
"$PY" -m pip install -q --progress-bar off "einops==0.8.1" "scipy>=1.10"
# the voice encoders' independent PyTorch implementations (as scripts/test.sh: --no-deps, model files only)
"$PY" -m pip install -q --progress-bar off --no-deps "s3tokenizer==0.3.0" "funasr==1.4.16"
unset minicpmo_backend_venv
