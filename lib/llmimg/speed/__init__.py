"""The speed lab of notebook 08 and ``llmimg bench``: ``profiling`` (where the time goes, FLOPs,
roofline, MFU), ``techniques`` (speed switches measured with their quality), ``distillation``
(few-step students) and ``bench`` (the benchmark's one JSON record)."""
