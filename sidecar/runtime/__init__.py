"""The running process: the app wired from the settings, the listeners, TLS, workers, the
health port, metrics, logs, signals and shutdown.

May import every package but `sidecar.cli`.
"""
