"""Deployment: bundles installed on robots and switched back.

The robot side, one module per job: :mod:`.layout` (the robot's bundle directory), :mod:`.lock`,
:mod:`.history`, :mod:`.engines`, :mod:`.smoke`, :mod:`.links` (the atomic switch), :mod:`.settle` (what follows
a switch); :mod:`.install` (``xvla-edge flash``) and :mod:`.rollback` run them in order. :mod:`.fleet` does the
same on many robots from a workstation, over SSH.
"""
