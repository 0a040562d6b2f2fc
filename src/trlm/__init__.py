"""trlm: time-reversed language models and the tools around them."""

from trlm.core.engine import Engine, GenArgs, Generation, LogLik, Request
from trlm.core.models import DEFAULT_MODEL, load_model

__all__ = ["Engine", "GenArgs", "Generation", "LogLik", "Request", "DEFAULT_MODEL", "load_model"]
__version__ = "0.1.0"
