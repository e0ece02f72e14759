"""``python -m medseg`` is the ``medseg`` command."""

from __future__ import annotations

from medseg.cli.app import main

main()
