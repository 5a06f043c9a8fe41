"""Pure cores of the monitor: decisions from observations, time passed in; no I/O."""
