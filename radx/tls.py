# -*- test-case-name: tests.test_security_tls,tests.test_scu_tls -*-
"""TLS for DICOM (PS3.15 Annex B): context options built from PEM files, for the SCP and for an SCU.

Both sides use the Non-Downgrading BCP 195 TLS Secure Transport Connection
Profile (PS3.15 B.9): TLS 1.2 or newer only, and for TLS 1.2 only the
forward-secret AEAD cipher suites that BCP 195 (RFC 9325 4.2) recommends.
TLS 1.3's suites are all AEAD and forward-secret; OpenSSL's defaults stand.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto
from service_identity import VerificationError
from twisted.internet import ssl
from twisted.internet.ssl import TLSVersion

# PS3.15 B.9 / RFC 9325 4.2: ECDHE key exchange with AES-GCM or
# ChaCha20-Poly1305. (DHE suites would need DH parameters; ECDHE suffices.)
BCP195_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"

# PS3.15 B.9: TLS 1.2 is the least version; 1.0 and 1.1 are refused (RFC 8996).
MINIMUM_VERSION = TLSVersion.TLSv1_2


class TLSConfigurationError(Exception):
    """A certificate, key or CA file cannot be used; the message names the file and why."""


def _read(flag: str, path: str) -> bytes:
    try:
        with open(path, "rb") as stream:
            return stream.read()
    except OSError as error:
        what = (error.strerror or str(error)).lower()
        raise TLSConfigurationError(f"{flag} {path}: {what}") from None


def load_certificates(flag: str, path: str) -> list[x509.Certificate]:
    """Every certificate of a PEM file, in order (a leaf and its chain, or CAs)."""
    data = _read(flag, path)
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        certificates = []
    if not certificates:
        raise TLSConfigurationError(f"{flag} {path}: no PEM certificate in the file")
    return certificates


def load_private_key(flag: str, path: str):
    data = _read(flag, path)
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise TLSConfigurationError(f"{flag} {path}: the key is encrypted; radx needs it unencrypted") from None
    except (ValueError, serialization.UnsupportedAlgorithm):
        raise TLSConfigurationError(f"{flag} {path}: no usable PEM private key in the file") from None


def _public_bytes(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _identity(cert_path: str, key_path: str, cert_flag: str, key_flag: str):
    """(certificate, private key, chain) as cryptography objects, the key checked against the certificate."""
    chain = load_certificates(cert_flag, cert_path)
    key = load_private_key(key_flag, key_path)
    if _public_bytes(chain[0].public_key()) != _public_bytes(key.public_key()):
        raise TLSConfigurationError(f"{key_flag} {key_path}: the key does not match the certificate in {cert_path}")
    return chain[0], key, chain[1:]


def _trust_root(flag: str, path: str):
    certificates = load_certificates(flag, path)
    return ssl.trustRootFromCertificates(
        [ssl.Certificate(crypto.X509.from_cryptography(certificate)) for certificate in certificates]
    )


def server_options(cert_path: str, key_path: str, ca_path: str | None = None) -> ssl.CertificateOptions:
    """
    The SCP's TLS options.

    With C{ca_path}, the peer must present a certificate that chains to one
    of the CA certificates in it (mutual TLS, PS3.15 B.9: the node
    authenticates the peer); the handshake fails otherwise.

    @raise TLSConfigurationError: a file is missing, unreadable or unusable.
    """
    # cryptography objects, as pyOpenSSL's Context takes them (since 24.3;
    # its own X509 and PKey are deprecated there); CertificateOptions hands
    # them to the Context as they are.
    certificate, key, chain = _identity(cert_path, key_path, "--tls-cert", "--tls-key")
    extra = {}
    if ca_path is not None:
        # A trust root makes Twisted verify, and require, the peer's certificate.
        extra = dict(trustRoot=_trust_root("--tls-ca", ca_path))
    options = ssl.CertificateOptions(
        privateKey=key,
        certificate=certificate,
        extraCertChain=chain,
        raiseMinimumTo=MINIMUM_VERSION,
        acceptableCiphers=ssl.AcceptableCiphers.fromOpenSSLCipherString(BCP195_CIPHERS),
        **extra,
    )
    _check(options)
    return options


def client_options(
    hostname: str,
    ca_path: str | None = None,
    cert_path: str | None = None,
    key_path: str | None = None,
):
    """
    An SCU's TLS options: the server's certificate is verified against
    C{ca_path} (or the system's trust store) and its name against
    C{hostname} (service-identity: a DNS name, or an IPv4 or IPv6 address
    matched against the certificate's IP addresses); C{cert_path}/C{key_path}
    are the client's own certificate, for a server that requires one.

    @raise TLSConfigurationError: a file is missing, unreadable or unusable;
        the message names the flag of radx's clients that gave it.
    """
    identity = {}
    if cert_path is not None or key_path is not None:
        if cert_path is None or key_path is None:
            raise TLSConfigurationError("--tls-cert and --tls-key go together")
        certificate, key, chain = _identity(cert_path, key_path, "--tls-cert", "--tls-key")
        # Given to CertificateOptions as they are, as for the server, not
        # through Twisted's PrivateCertificate, which would hand OpenSSL
        # pyOpenSSL's deprecated X509 and PKey.
        identity = dict(certificate=certificate, privateKey=key, extraCertChain=chain)
    trust_root = _trust_root("--tls-ca", ca_path) if ca_path is not None else None
    try:
        return ssl.optionsForClientTLS(
            hostname,
            trustRoot=trust_root,
            extraCertificateOptions=dict(
                raiseMinimumTo=MINIMUM_VERSION,
                acceptableCiphers=ssl.AcceptableCiphers.fromOpenSSLCipherString(BCP195_CIPHERS),
                **identity,
            ),
        )
    except UnicodeError:
        raise TLSConfigurationError(f"{hostname!r} is not a host name a certificate can be checked against") from None
    except SSL.Error as error:
        raise TLSConfigurationError(f"OpenSSL refused the TLS set-up: {error}") from None


def describe_tls_failure(failure) -> str:
    """
    Why a TLS connection failed, in one line: OpenSSL's reasons ("wrong
    version number", "certificate verify failed"), the name a server's
    certificate does not carry, or how the connection ended.
    """
    error = failure.value
    if isinstance(error, VerificationError):
        # service-identity: the certificate is trusted but names another host.
        wanted = ", ".join(sorted({_mismatched(mismatch) for mismatch in error.errors}))
        return f"the certificate does not name {wanted}"
    if isinstance(error, SSL.Error):
        reasons = [entry[2] for entry in (error.args[0] if error.args else []) if isinstance(entry, tuple) and len(entry) == 3]
        if reasons:
            return "; ".join(reasons)
        return str(error) or type(error).__name__
    return "the connection closed before the handshake completed"


# What OpenSSL's reasons mean to a client, in the terms of radx's flags.
_CLIENT_MEANINGS = {
    "certificate verify failed": "the server's certificate is not from a trusted CA, or not valid now",
    "tlsv13 alert certificate required": "the server requires a client certificate",
    "tlsv1 alert unknown ca": "the server does not trust the CA of the client certificate",
    "sslv3 alert handshake failure": "the server refused the handshake",
    "wrong version number": "the server does not speak TLS on this port",
}


def describe_server_refusal(failure) -> str:
    """describe_tls_failure for a client: OpenSSL's reason, and what it means where that is known."""
    why = describe_tls_failure(failure)
    meaning = _CLIENT_MEANINGS.get(why)
    return f"{why} ({meaning})" if meaning else why


def client_connection_failure(failure, handshake_done: bool, established: bool) -> str | None:
    """
    Why a client's TLS connection ended, when it ended on a TLS error or
    before its handshake was done; None when it simply closed. With TLS 1.3
    the server checks a client certificate after the client's side of the
    handshake is done: its alert arrives as the connection's end.
    """
    if handshake_done and failure.check(SSL.Error, VerificationError) is None:
        return None
    if established:
        return f"TLS connection failed: {describe_server_refusal(failure)}"
    return f"TLS handshake failed: {describe_server_refusal(failure)}"


def _mismatched(mismatch) -> str:
    identity = mismatch.mismatched_id
    for attribute in ("hostname", "ip"):
        value = getattr(identity, attribute, None)
        if value is not None:
            return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    return str(identity)


def _check(options: ssl.CertificateOptions) -> None:
    """Build the OpenSSL context once, so that what OpenSSL refuses is found at start."""
    try:
        options.getContext()
    except SSL.Error as error:
        raise TLSConfigurationError(f"OpenSSL refused the TLS set-up: {error}") from None

