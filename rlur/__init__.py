"""rlur: reinforcing user retention in short-video recommendation (Cai et al., WWW 2023)."""

__version__ = "0.1.0"
