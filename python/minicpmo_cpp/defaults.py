"""Default settings, read from the native defaults table (the initial values of the C++ settings
structs) so that the Python signatures, the C API's ``minicpmo_*_default_params`` and the CLI agree.

``SESSION`` (n_ctx, n_threads, n_batch, kv_cache_type), ``REPLY`` (the official chat() sampling:
do_sample, temperature, top_p, top_k, repetition_penalty, max_new_tokens), ``DUPLEX`` (window_high,
window_low, context_max_units, context_previous_max_tokens, context_previous_marker) and
``DUPLEX_UNIT`` (the official duplex decision settings)."""

from __future__ import annotations

from types import SimpleNamespace

from . import _core


def _namespace(values: dict) -> SimpleNamespace:
    # float32 settings read back as the decimal they were written as (0.7, not 0.699999988)
    return SimpleNamespace(**{k: float(f"{v:.7g}") if isinstance(v, float) else v for k, v in values.items()})


_TABLE = _core.defaults()
SESSION = _namespace(_TABLE["session"])
REPLY = _namespace(_TABLE["reply"])
DUPLEX = _namespace(_TABLE["duplex"])
DUPLEX_UNIT = _namespace(_TABLE["duplex_unit"])
