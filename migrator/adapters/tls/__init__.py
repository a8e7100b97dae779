"""
TLS 1.3 sessions that move (placeholder, filled in below).
"""
