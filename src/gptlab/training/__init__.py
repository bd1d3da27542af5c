"""The single training loop and the small task files that plug into it."""
