"""FactCG: CG2C multi-hop synthetic data and a grounded fact checker. Empty until that issue lands."""
