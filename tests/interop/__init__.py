"""Interop tests: what securemail writes, openssl and gpgsm read, and the other way round."""
