"""The core every system builds on: model loading with token order, the engine (scoring, decoding steps,
generation), counter-based sampling, JSONL I/O, the result cache, the chat-client interface, sentence
embeddings, data parallelism and report helpers."""
