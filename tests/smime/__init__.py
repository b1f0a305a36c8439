"""Tests for securemail.smime."""
