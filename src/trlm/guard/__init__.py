"""The TRLM-augmented safety filter: input filters (MiniLM + LR, LLM judges) and the Alg. 12 defense."""

from trlm.guard.defense import DEFENSE_MODELS, DefenseArgs, GuardVerdict, TRLMDefense, clean_query, reject
from trlm.guard.filters import GUARD_PROMPT, ChatJudgeFilter, EmbeddingFilter, LLMJudgeFilter, make_filter

__all__ = ["DEFENSE_MODELS", "DefenseArgs", "GuardVerdict", "TRLMDefense", "clean_query", "reject", "GUARD_PROMPT",
           "ChatJudgeFilter", "EmbeddingFilter", "LLMJudgeFilter", "make_filter"]
