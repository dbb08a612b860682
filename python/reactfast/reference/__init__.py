"""Pure-PyTorch reference implementations: the oracle every fast path is tested against."""
