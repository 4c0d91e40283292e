"""minicpmo_cpp._testing: the per-stage hooks the tests and benchmarks use live outside the public
binding _core, and hooks() is how a test reaches a session's native objects (no private attributes)."""
import numpy as np
import pytest

from minicpmo_cpp import MinicpmoError, OmniSession, _core, _testing
from backend import SESSION

TEST_ONLY = ("log_mel", "StreamingMel", "Flow", "HiftVocoder", "SpeechSynthesizer", "TtsSimplexStream",
             "TtsDuplexStream", "duplex_decode", "preprocess_image", "image_slice_layout", "navit_position_ids",
             "system_info", "hooks")


def _names(cls) -> set[str]:
    return {n for n in vars(cls) if not n.startswith("_")}


def test_core_has_no_test_hooks():
    for name in TEST_ONLY:
        assert hasattr(_testing, name) and not hasattr(_core, name), name
    # a hooks class adds what its native class does not have (the rest is passed on to it)
    for hooks, native in ((_testing.SessionHooks, _core.Session), (_testing.ModelHooks, _core.Model),
                          (_testing.SimplexHooks, _core.SimplexStream), (_testing.DuplexHooks, _core.DuplexSession)):
        assert not (_names(hooks) & _names(native)), (hooks, _names(hooks) & _names(native))
    assert _testing.MinicpmoError is _core.MinicpmoError is MinicpmoError


def test_hooks_of_a_session_and_a_duplex(tiny_f32):
    s = OmniSession(str(tiny_f32[0]), n_threads=2, **SESSION, n_ctx=256)
    h = _testing.hooks(s)
    assert isinstance(h.native, _core.Session) and isinstance(h.model.native, _core.Model)
    ids = s.tokenize("Hello there")
    assert h.prefill(ids) == (0, len(ids))  # a hook (the package prefills through _core.start_reply)
    assert h.kv_tokens == ids and h.n_past == len(ids)
    logits = h.last_logits()  # a hook
    assert logits.shape == (1, h.model.n_vocab) and np.isfinite(logits).all()
    with pytest.raises(AttributeError):
        h.no_such_attribute
    with pytest.raises(MinicpmoError, match="simplex"):
        h.simplex  # none before the first streaming_prefill
    s.streaming_prefill({"role": "user", "content": "Hi."})
    assert _testing.hooks(s).simplex.user_turn_open
    d = s.as_duplex(generate_audio=False, seed=1)
    dh = _testing.hooks(d)
    assert isinstance(dh.native, _core.DuplexSession) and dh.prepared is False
    d.close()
    with pytest.raises(TypeError):
        _testing.hooks(object())
    s.close()
    assert h.closed
