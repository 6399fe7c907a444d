from cpbench.cli import entrypoint

entrypoint()
