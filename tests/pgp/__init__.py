"""Tests for securemail.pgp."""
