"""Unit tests: no emulator and no worker (a fake model server or process at most)."""
