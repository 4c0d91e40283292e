"""numpy reference of the MiniCPM-o 4.5 audio front end (MODEL_SPEC.md §3.1 batch log-mel, §3.4
streaming mel), written from the spec: float64 throughout, np.fft.rfft for the DFT, and the
streaming processor done the slow, obvious way (the whole buffer's mel recomputed on every call).

Layouts follow the runtime: a log-mel spectrogram is (n_mel, n_frames).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MEL_FLOOR = 1e-10  # clamp before log10


def periodic_hann(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def log10_mel_frames(signal: np.ndarray, filters: np.ndarray, n_fft: int = 400, hop: int = 160) -> np.ndarray:
    """log10(max(filters @ |STFT|^2, 1e-10)) of a signal, (n_mel, n_frames), no clip or scaling.

    STFT as torch.stft(center=True, pad_mode="reflect") with a periodic Hann window; the last frame
    is dropped, so there are len(signal) // hop frames for n_fft = 400, hop = 160.
    """
    x = np.asarray(signal, dtype=np.float64)
    half = n_fft // 2
    padded = np.pad(x, (half, half), mode="reflect")
    n_stft = 1 + (len(padded) - n_fft) // hop
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:n_stft]
    spectrum = np.fft.rfft(frames * periodic_hann(n_fft), axis=1)
    power = spectrum.real**2 + spectrum.imag**2  # (n_stft, n_bins)
    power = power[:-1]  # drop the last STFT frame
    mel = np.asarray(filters, dtype=np.float64) @ power.T
    return np.log10(np.maximum(mel, MEL_FLOOR))


def scale(log_mel: np.ndarray, threshold: float) -> np.ndarray:
    return (np.maximum(log_mel, threshold) + 4.0) / 4.0


def batch_log_mel(pcm: np.ndarray, filters: np.ndarray, chunk_samples: int = 480000, n_fft: int = 400,
                  hop: int = 160, dynamic_range: float = 8.0):
    """§3.1 batch path: 30-s pieces, each zero-padded to chunk_samples before the STFT, clipped at
    (max over the whole padded piece) - dynamic_range, scaled, cut to ceil(n_piece / hop) frames and
    concatenated. Returns (mel (n_mel, n_frames), [frames per piece])."""
    pcm = np.asarray(pcm, dtype=np.float64)
    assert pcm.ndim == 1 and pcm.size > 0
    outs, counts = [], []
    for start in range(0, pcm.size, chunk_samples):
        piece = pcm[start:start + chunk_samples]
        padded = np.zeros(chunk_samples)
        padded[:piece.size] = piece
        raw = log10_mel_frames(padded, filters, n_fft, hop)
        keep = min(raw.shape[1], -(-piece.size // hop))
        outs.append(scale(raw, raw.max() - dynamic_range)[:, :keep])
        counts.append(keep)
    return np.concatenate(outs, axis=1), counts


@dataclass
class Chunk:
    mel: np.ndarray          # (n_mel, n_frames)
    first_frame: int         # global frame number of column 0
    prefix_frames: int
    core_frames: int
    suffix_frames: int
    dynamic_clip: bool
    is_flush: bool = False
    threshold: float = float("nan")  # the lower clip used (log10 units)


@dataclass
class StreamingMelReference:
    """§3.4: StreamingMelProcessorExact semantics plus the simplex / duplex first-chunk handling.

    feed: "raw" (each push is one processor call), "simplex" (first push front-padded with zeros
    to first_chunk_ms), "duplex" (pushes collect in a pending buffer, front-padded before the first
    call; each call takes exactly the requested chunk size).
    """

    filters: np.ndarray
    feed: str = "raw"
    redundancy_frames: int = 0
    chunk_ms: int = 1000
    first_chunk_ms: int = 1035
    sliding_window: bool = True
    sample_rate: int = 16000
    n_fft: int = 400
    hop: int = 160
    truncate_samples: int = 480000  # the feature extractor truncates its input to 30 s
    dynamic_range: float = 8.0
    log_floor: float = -10.0
    buffer: np.ndarray = field(default_factory=lambda: np.zeros(0))
    base_frame: int = 0
    emitted: int = 0
    calls: int = 0
    pending: np.ndarray = field(default_factory=lambda: np.zeros(0))
    pushes: int = 0
    chunks: list = field(default_factory=list)

    @property
    def chunk_samples(self) -> int:
        return int(round(self.chunk_ms * self.sample_rate / 1000))

    @property
    def first_call_samples(self) -> int:
        raw = int(round(self.first_chunk_ms * self.sample_rate / 1000))
        return max(self.hop, raw // self.hop * self.hop)

    @property
    def pad_to(self) -> int:
        return self.first_chunk_ms * self.sample_rate // 1000

    def requested(self) -> int:
        return self.first_call_samples if self.calls == 0 else self.chunk_samples

    def push(self, pcm: np.ndarray, is_last_chunk: bool = False) -> None:
        pcm = np.asarray(pcm, dtype=np.float32).astype(np.float64)
        first_push = self.pushes == 0
        self.pushes += 1
        if self.feed == "raw":
            self._call(pcm, is_last_chunk)
        elif self.feed == "simplex":
            if first_push and pcm.size < self.pad_to:
                pcm = np.concatenate([np.zeros(self.pad_to - pcm.size), pcm])
            self._call(pcm, is_last_chunk)
        elif self.feed == "duplex":
            self.pending = np.concatenate([self.pending, pcm])
            if self.calls == 0 and self.pending.size < self.pad_to:
                self.pending = np.concatenate([np.zeros(self.pad_to - self.pending.size), self.pending])
            need = self.requested()
            if self.pending.size >= need:
                if self.calls == 0:
                    consumed = int(int(need / self.sample_rate * 1000) * self.sample_rate / 1000)
                else:
                    consumed = int(self.chunk_ms * self.sample_rate / 1000)
                self._call(self.pending[:need], is_last_chunk)
                self.pending = self.pending[consumed:]
        else:
            raise ValueError(self.feed)

    def _slide(self) -> None:
        sr = self.sample_rate
        n = self.buffer.size
        if not self.sliding_window or n < 30 * sr:
            return
        drop = 10 * sr
        guard = min(1 * sr, n - drop)
        drop = min(drop, max(0, n - guard))
        drop -= drop % self.hop
        if drop > 0:
            self.buffer = self.buffer[drop:]
            self.base_frame += drop // self.hop

    def _buffer_mel(self):
        """Clipped and scaled mel of the whole buffer, with the clip mode of this buffer length."""
        raw = log10_mel_frames(self.buffer[:self.truncate_samples], self.filters, self.n_fft, self.hop)
        dynamic = self.buffer.size >= 5 * self.sample_rate
        threshold = raw.max() - self.dynamic_range if dynamic else self.log_floor
        return scale(raw, threshold), dynamic, threshold

    def _call(self, samples: np.ndarray, is_last_chunk: bool) -> None:
        self.calls += 1
        self.buffer = np.concatenate([self.buffer, samples])
        self._slide()
        if self.buffer.size < self.n_fft:
            return  # the official code raises here; the runtime emits nothing (a documented choice)
        mel, dynamic, threshold = self._buffer_mel()
        n_frames = mel.shape[1]
        stable = min(n_frames, (self.buffer.size - self.n_fft // 2) // self.hop + 1)
        core_begin = self.emitted
        core_end = core_begin + self.chunk_samples // self.hop
        red = self.redundancy_frames
        if self.base_frame + stable < core_end + red and not is_last_chunk:
            return
        lo = min(max(max(0, core_begin - red) - self.base_frame, 0), n_frames)
        hi = min(max(core_end + red - self.base_frame, lo), n_frames)
        self.emitted = core_end
        if hi == lo:
            return
        g0, g1 = self.base_frame + lo, self.base_frame + hi
        prefix = max(0, min(g1, core_begin) - g0)
        core = max(0, min(g1, core_end) - max(g0, core_begin))
        self.chunks.append(Chunk(mel[:, lo:hi], g0, prefix, core, hi - lo - prefix - core, dynamic,
                                 threshold=threshold))

    def flush(self) -> None:
        if self.buffer.size < self.n_fft:
            return
        mel, dynamic, threshold = self._buffer_mel()
        total = self.base_frame + mel.shape[1]
        if self.emitted >= total:
            return
        lo = max(0, self.emitted - self.base_frame)
        self.emitted = total
        self.chunks.append(Chunk(mel[:, lo:], self.base_frame + lo, 0, mel.shape[1] - lo, 0, dynamic, True,
                                 threshold))
