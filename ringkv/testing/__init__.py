"""Shipped fakes for tests and the simulator: fake clock, simulated network, fake file systems."""
