"""The data guard (pure): what a request body is, read from its bytes, and the card numbers
and credential fields in it masked or refused; route `map` rules on JSON.

May import: the foundation only. Never aiohttp or redis: it is tested with plain bytes.
"""
