"""Serving a model over HTTP: the OpenAI API shapes (`api.py`) and the server with its chat page (`app.py`)."""
