"""The domains of the tests' tiny server bundle (``tiny_server_bundle`` in conftest.py), importable by name."""

# bridge-widowx (5 s, one arm), robotwin2-agilex (1 s, two arms), robomind-franka-dual (4 s, two arms)
SERVER_DOMAINS = (0, 6, 17)
