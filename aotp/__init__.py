"""aotp: GLUE/SuperGLUE reproduction harness for Ahead-of-Time P-Tuning and its baselines."""

__version__ = "0.1.0"
