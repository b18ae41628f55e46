"""`make bench`: the sidecar side by side with a direct upstream, a naive aiohttp proxy and
nginx, on loopback, in one run. Every figure that matters is a ratio measured in that run."""
