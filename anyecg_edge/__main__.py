"""`python -m anyecg_edge ...` runs the CLI (same as the `anyecg-edge` script)."""

from anyecg_edge.cli import main

main()
