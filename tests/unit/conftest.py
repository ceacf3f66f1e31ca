"""Unit tests share tests/conftest.py (sys.path for lab and netmend)."""
