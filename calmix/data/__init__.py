"""Data readers and providers shared by calibration and evaluation: files, the hub, packages, BIG-bench, the
reserved evaluation items, and one local -> package -> hub resolver."""
