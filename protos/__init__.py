"""Protocol buffer sources and their generated Python stubs.

Regenerate after editing a .proto (from the repository root)::

    python -m protos.generate
"""
