"""Image generators: one file per generation mode behind the protocol in ``base.py``."""
