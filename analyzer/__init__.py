"""stallscope: offline incident analyzer.

>>> import analyzer
>>> tl = analyzer.load("samples/thread_monitor/monitor_sleep_threads.log")
>>> sorted(tl.metrics.columns) == sorted(["ts", "source", "host", "entity", "metric", "value", "file", "line"])
True
"""

from analyzer.correlate import correlate
from analyzer.load import load
from analyzer.timeline import Timeline

__all__ = ["load", "Timeline", "correlate"]
__version__ = "0.1.0"
