"""Fault injection: real clients against a loopback server that misbehaves on demand."""
