"""Core of the Prior Swap CFG pack: the math and the model routing, independent of node classes."""
