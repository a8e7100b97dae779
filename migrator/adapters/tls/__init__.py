# -*- test-case-name: tests.test_tlsrecord,tests.test_tlsfollow -*-
"""
TLS 1.3 sessions that move (in progress): the record layer, and the
incumbent's following of the sessions OpenSSL runs.
"""

from migrator.adapters.tls._follow import followFactory, followPort

__all__ = ["followFactory", "followPort"]
