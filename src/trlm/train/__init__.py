"""Training in forward, reverse or both token orders: one loop that takes examples and a loss."""

from trlm.train.data import TokenExample
from trlm.train.loop import TrainArgs, TrainResult, train
from trlm.train.losses import causal_lm_loss
from trlm.train.model import ModelArgs

__all__ = ["ModelArgs", "TokenExample", "TrainArgs", "TrainResult", "causal_lm_loss", "train"]
