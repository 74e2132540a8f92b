"""One module per ``xvla-edge`` command, named for the command.

Each module defines ``add_arguments(parser)`` and ``run(args) -> int`` (the exit status) and imports only
the standard library at module level: the libraries a command needs are imported inside ``run``, the
optional ones under :func:`xvla_edge.extras.needs`, so ``--help`` and the robot-side commands never load
torch, transformers or onnx.
"""
