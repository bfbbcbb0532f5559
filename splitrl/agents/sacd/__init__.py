from splitrl.agents.sacd.buffers import MaskableReplayBuffer
from splitrl.agents.sacd.policies import MlpPolicy, SACDPolicy
from splitrl.agents.sacd.sacd import SACD

__all__ = ["SACD", "MaskableReplayBuffer", "MlpPolicy", "SACDPolicy"]
