"""``trlm serve``: the HTTP API (Cohere- and OpenAI-compatible). Empty until that issue lands."""
