# -*- test-case-name: tests.test_tlsrecord,tests.test_tlsfollow,tests.test_tlstransport -*-
"""
TLS 1.3 sessions that move: an HTTPS keep-alive connection (or any
connection of an adaptable protocol inside Twisted's TLS) goes on in the
successor without a new handshake.

Kernel TLS is not available, and OpenSSL cannot load a session's state
into a new connection, so the session is carried by migrator itself:

  - in every process, the TLS ports' factories are followed from the start
    (L{followPort}, hooked on the listener registry): the traffic secrets
    come from OpenSSL's key-log callback, and a passive record layer
    follows every record to know the sequence numbers, KeyUpdates and
    partial records (L{migrator.adapters.tls._follow});
  - at a takeover, an idle session is captured with its application
    protocol (L{migrator.adapters.tls._adapters});
  - the successor continues it with its own TLS 1.3 record layer, built on
    the C{cryptography} package's AEADs and HKDF
    (L{migrator.adapters.tls._record}), in a transport that takes the
    place of Twisted's (L{migrator.adapters.tls._transport}).

Suites: TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384,
TLS_CHACHA20_POLY1305_SHA256.  Everything else (TLS 1.2, a session in its
handshake or closing, early data, a port opened before migrator's hook)
declines with a reason and drains, harmlessly when the protocol inside
says so.  C{docs/adapters.md}, "TLS sessions", has the security reasoning.
"""

from migrator.adapters.tls._adapters import registerAdapters
from migrator.adapters.tls._follow import followFactory, followPort
from migrator.adapters.tls._transport import TLSRecordTransport

__all__ = ["TLSRecordTransport", "followFactory", "followPort", "registerAdapters"]
