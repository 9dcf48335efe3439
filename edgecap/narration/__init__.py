"""`edgecap narrate`: frame sources, capture, the scene gate, light/colour/text channels, controls,
several streams."""
