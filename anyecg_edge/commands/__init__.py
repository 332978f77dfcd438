"""CLI commands, one module per area; each exposes COMMANDS (click commands/groups).

Modules import only click and the device core at import time; torch-bound work is
imported inside the command bodies.
"""
