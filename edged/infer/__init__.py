"""Inference runtimes behind one small interface (see :mod:`edged.infer.base`)."""
