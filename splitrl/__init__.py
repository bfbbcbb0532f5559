"""splitrl: adaptive split computing with early exits, learned by Soft Actor-Critic for discrete actions.

Per inference request an edge device decides where a DNN stops (exit), where it is cut between the
device and an edge server (split) and to how many bits the tensor crossing the uplink is quantized
(bit-width). See ``docs/architecture.md`` for the map of the package.
"""

__version__ = "0.1.0"
