"""LLM backends: OpenAI-compatible HTTP servers and local transformers causal LMs."""
