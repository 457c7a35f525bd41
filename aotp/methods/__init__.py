"""Registered methods. Importing this package registers every method module listed here."""

from aotp.methods.base import METHODS, InferenceVariant, Method, build_method, head_parameter_count
from aotp.methods import full_ft  # noqa: F401  (registers full_ft)
from aotp.methods import aot  # noqa: F401  (registers aot_fc, aot_kron)
from aotp.methods import bitfit, bottleneck_adapters, lora, ptuning_v2  # noqa: F401  (registers the baselines)

__all__ = ["METHODS", "InferenceVariant", "Method", "build_method", "head_parameter_count"]
