"""Quantization of the MiniCPM-o LLM file into the 16 sizes, through libllama's quantizer."""

from .llm import QUANT_TYPES, output_name, quantize_llm_file

__all__ = ["QUANT_TYPES", "output_name", "quantize_llm_file"]
