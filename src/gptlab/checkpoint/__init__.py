"""Checkpoint formats: gptlab's own (`native`), Hugging Face folders (`hf`), GGUF, OpenAI's TensorFlow GPT-2,
the book's .pth, on a shared base (`weights`). Which one a name points at is `gptlab.loading`'s choice."""
