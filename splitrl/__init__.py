"""splitrl: adaptive split computing with early exits, learned by Soft Actor-Critic for discrete actions.

Per inference request an edge device decides where a DNN stops (exit), where it is cut between the
device and an edge server (split) and to how many bits the tensor crossing the uplink is quantized
(bit-width). See ``docs/architecture.md`` for the map of the package.

Importing ``splitrl`` registers the Gymnasium envs (``splitrl.envs``; no torch is imported)::

    import gymnasium as gym
    import splitrl

    env = gym.make("splitrl/SplitComputing-v1")
"""

__version__ = "0.1.0"

from splitrl import envs  # registers the Gymnasium envs

__all__ = ["__version__", "envs"]
