"""Helpers the test modules share: fakes, stand-ins, reference implementations and the tier plugin."""
