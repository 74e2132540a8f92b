"""``xvla-edge serve``: bundles behind the official X-VLA ``/act`` API and a msgpack websocket (see app.py)."""
