"""Rollouts: immediate, blue-green, canary, rolling and shadow, as a persistent state machine with analysis gates."""

from qmlops.deploy._controller import STRATEGIES, RolloutController, controller_handle

__all__ = ["STRATEGIES", "RolloutController", "controller_handle"]
