"""gridtune: physics-informed fine-tuning of graph neural networks across power grids."""

__version__ = "0.1.0"
