"""The admin API (SPEC §16): its server, endpoints and the readers behind them. May import the
proxy's, the archive's and every lower layer's modules; only `sidecar.runtime` imports it."""
