"""uffdtrace: live tracer and race detector for Linux userfaultfd."""

__version__ = "0.1.0"
