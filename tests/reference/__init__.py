"""Reference implementations used only as test oracles (never imported by the package)."""
