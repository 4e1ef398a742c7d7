"""rlvr: reinforcement learning from verifiable rewards for reasoning models."""

__version__ = "0.1.0"
