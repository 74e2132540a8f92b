"""Fleet operations from a workstation: flash many robots over SSH, see what each runs."""
