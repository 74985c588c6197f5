"""DICOM TLS (PS3.15 B.1): the server's SSL context, when certificates are configured."""

from __future__ import annotations

import ssl

from listener.config import ListenerConfig


def server_ssl_context(config: ListenerConfig) -> ssl.SSLContext | None:
    """An SSL context for the listener, or None when TLS is off (the default).

    With ``tls_ca_file`` set, callers must present a certificate signed by that CA.
    """
    if config.tls_cert_file is None or config.tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=config.tls_cert_file, keyfile=config.tls_key_file)
    if config.tls_ca_file is not None:
        context.load_verify_locations(cafile=config.tls_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context
