"""Fuzzing the readers, the layouts and the codec: `python -m fuzz TARGET --minutes N`."""
