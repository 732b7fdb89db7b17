"""Bytes in, bytes out: every wire and file format to and from the engine's columns."""
