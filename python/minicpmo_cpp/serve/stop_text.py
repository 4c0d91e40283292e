"""Stop sequences over a streamed reply: text is released only once no stop sequence can begin
in it, and the reply ends at the first stop sequence (which is not part of the reply)."""

from __future__ import annotations


class StopText:
    def __init__(self, stops: list[str]):
        self.stops = stops
        self._held = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        """The text that can be sent now; sets ``stopped`` when a stop sequence appeared."""
        if self.stopped:
            return ""
        text = self._held + piece
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return text[:cut]
        keep = max((k for s in self.stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
        self._held = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep]

    def flush(self) -> str:
        """The held text at the end of the reply (no stop sequence came)."""
        text, self._held = self._held, ""
        return text
