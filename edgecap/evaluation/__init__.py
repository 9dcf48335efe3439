"""How good and how fast: the metrics driver, decision metrics, `edgecap eval`, `edgecap bench`."""
