"""The backend the suite runs on: ``MINICPMO_TEST_BACKEND=cpu|vulkan|cuda|metal`` (default cpu).

Every test that builds a session or a component builds it on this backend (``SESSION`` for
``OmniSession``, ``DEVICE`` for the ``_testing`` components). Greedy tokens, speech tokens and duplex
decisions are compared exactly on every backend; float results get the backend's tolerance floor
(``tol``), written here with the reason. Tests of things that never touch a device (the converter,
the numpy references, media decoding, argument checks) run the same everywhere.
"""

from __future__ import annotations

import os

NAME = os.environ.get("MINICPMO_TEST_BACKEND", "cpu").strip().lower() or "cpu"
_DEVICES = {"cpu": "cpu", "vulkan": "Vulkan0", "cuda": "CUDA0", "metal": "MTL0"}
if NAME not in _DEVICES:
    raise RuntimeError(f"MINICPMO_TEST_BACKEND={NAME!r}: expected one of {', '.join(_DEVICES)}")
DEVICE = _DEVICES[NAME]
ON_DEVICE = NAME != "cpu"
# keyword arguments of every OmniSession a test builds
SESSION = {"device": DEVICE}
# How CPU sessions compute, for every front end (MINICPMO_COMPUTE, set by conftest.py): the exact f32
# path, on which every tolerance of the suite was measured. compute_type "auto" means bf16 on CPUs with
# AMX or AVX-512 BF16; tests/test_bf16_compute.py covers that path against the same float64
# references with its own bound (2e-2), tests/test_int8_compute.py the int8 path (8e-2). MINICPMO_TEST_COMPUTE=bf16 runs the whole suite on it: the
# exact comparisons are then expected to break (README, "BF16 matrix products").
COMPUTE = os.environ.get("MINICPMO_TEST_COMPUTE", "f32").strip().lower() or "f32"

# Relative error floor of each backend's float arithmetic against the float64 references, for
# results of a whole stage (encoder output, mel, waveform):
# - cpu: 0, each test's own tolerance stands (ggml's F32 kernels; measured per test).
# - vulkan: ggml-vulkan runs F32 matrix products through F16 shaders (inputs rounded to F16, about
#   5e-4 relative each): up to ~1e-3 relative after a stage on tests/test_backend_parity.py's inputs,
#   3e-3 leaves room. That floor is for that file only: the whole suite with F16 shaders (lavapipe,
#   measured) breaks it where long inputs gather rounding (the 30-s Whisper window: 2.8e-2 against
#   float64; LLM logits after 640 vision rows: 3.2e-4 where the F32 test asks 1e-4) and where HiFT
#   integrates F0 into a phase (waveforms O(1) apart sample by sample). So the suite runs on Vulkan
#   with F32 shaders, GGML_VK_DISABLE_F16=1 (ggml reads any value, "0" too), as
#   scripts/test_vulkan.sh does: 4e-6 .. 4.5e-4 measured on the parity stages, a 1e-3 floor.
# - cuda: cuBLAS computes F32 products in F32 (TF32 is off in ggml) but F16 weights go through F16
#   tensor cores: the same floor as vulkan's F16 shaders.
# - metal: simdgroup matrix products take F16/F32 inputs with F32 accumulation: as cuda.
_F16_SHADERS = "GGML_VK_DISABLE_F16" not in os.environ  # ggml-vulkan: set to anything = F32 shaders
# shown in the report header: a whole-suite run on Vulkan with F16 shaders is expected to fail (above)
PRECISION = ""
if NAME == "vulkan":
    PRECISION = "F16 shaders: only tests/test_backend_parity.py's floors hold" if _F16_SHADERS else "F32 shaders"
FLOAT_RTOL = {
    "cpu": 0.0,
    "vulkan": 3e-3 if _F16_SHADERS else 1e-3,
    "cuda": 3e-3,
    "metal": 3e-3,
}[NAME]


# Waveforms: HiFT turns its predicted F0 into a sine phase (a running sum over every sample) and its
# output through exp() magnitudes and an inverse STFT, so the F16 shaders' rounding moves the samples
# themselves (tiny model: 0.12 max relative difference for one mel, 0.65 for a whole spoken reply)
# while the magnitude spectrum stays within 6e-3 and 2.2e-2 (measured). F32 arithmetic compares
# waveforms sample by sample (GGML_VK_DISABLE_F16=1: 3.7e-4); F16 shaders compare STFT magnitudes
# within SPECTRUM_RTOL.
# A whole spoken reply (LLM hidden states -> TTS -> flow -> HiFT) gathers more: 2.3e-3 measured with
# F32 shaders, hence WAVEFORM_RTOL.
WAVEFORM_SAMPLES_COMPARABLE = FLOAT_RTOL <= 1e-3
WAVEFORM_RTOL = 0.0 if NAME == "cpu" else 5e-3
SPECTRUM_RTOL = 5e-2


def tol(rtol: float) -> float:
    """A test's relative tolerance on this backend: its own, or the backend's floor if larger."""
    return max(rtol, FLOAT_RTOL)
