"""The monitor's service layer: the pure cores driven by decoded inputs, talking to ports."""
