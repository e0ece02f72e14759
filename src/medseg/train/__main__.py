"""``python -m medseg.train DATA --out RUN ...`` (= ``medseg train``; what torchrun starts)."""

from __future__ import annotations

from medseg.cli.app import train_main

if __name__ == "__main__":
    train_main()
