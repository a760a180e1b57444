"""Target-hardware engine: timing, roofline metrics, latency table, learned latency model."""

from .table import LatencyTable, Row, build_table
from .measure import MeasureSettings, Timing, measure_module
from .calibration import validate_model
from .model import LatencyModel, measure_archs
from .roofline import Roofline, count_bytes, count_macs, probe_roofline

__all__ = [
    "LatencyTable",
    "Row",
    "build_table",
    "MeasureSettings",
    "Timing",
    "measure_module",
    "LatencyModel",
    "measure_archs",
    "validate_model",
    "Roofline",
    "count_bytes",
    "count_macs",
    "probe_roofline",
]
