"""The command line (`sidecar …`): thin commands that parse, call into the packages below and
print. `main.main` is the entry point.
"""
