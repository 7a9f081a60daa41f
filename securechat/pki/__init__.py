"""Certificates: the CA, server and client profiles, the certs directory."""
