"""minicpmo-cpp: a llama.cpp-backed runtime for the MiniCPM-o 4.5 omni model."""

from ._core import MinicpmoError, cpu_features, device_names
from .duplex import DuplexSession
from .session import OmniSession

__all__ = ["OmniSession", "DuplexSession", "MinicpmoError", "device_names", "cpu_features", "__version__"]
__version__ = "0.1.0"
