"""Tests for securemail.stream."""
