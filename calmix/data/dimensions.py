"""Capability dimensions, named once: what evaluation scores and what calibration sources are grouped by."""

DIMENSIONS: tuple[str, ...] = ("General", "Commonsense", "Code", "Math")  # scored by evaluation, averaged by retention
SOURCE_DIMENSIONS: tuple[str, ...] = (*DIMENSIONS, "Instruction")  # calibration sources may also be instruction data
