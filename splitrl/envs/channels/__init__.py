"""Uplink channel models: capacity over time and transfer times integrated over it."""

from splitrl.envs.channels.base import (
    Channel,
    ChannelError,
    PiecewiseConstantChannel,
    private_generator,
)
from splitrl.envs.channels.cellular import CellularChannel
from splitrl.envs.channels.constant import ConstantChannel
from splitrl.envs.channels.factory import CHANNEL_MODELS, make_channel
from splitrl.envs.channels.fading import BlockFadingChannel
from splitrl.envs.channels.gilbert_elliott import GilbertElliottChannel
from splitrl.envs.channels.markov import MarkovChannel
from splitrl.envs.channels.trace_replay import TraceChannel

__all__ = [
    "CHANNEL_MODELS",
    "BlockFadingChannel",
    "CellularChannel",
    "Channel",
    "ChannelError",
    "ConstantChannel",
    "GilbertElliottChannel",
    "MarkovChannel",
    "PiecewiseConstantChannel",
    "TraceChannel",
    "make_channel",
    "private_generator",
]
