"""Metrics, plots and (later) test-set responses and LLM judging."""
