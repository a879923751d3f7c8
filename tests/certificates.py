"""Certificates made by the tests: a CA, a server certificate for 127.0.0.1/localhost, client certificates."""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass
class Identity:
    """PEM files of a certificate and its key, and the certificate's subject as radx logs it."""

    cert: str
    key: str
    subject: str
    certificate: x509.Certificate
    private_key: object


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "radx tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write(folder: str, stem: str, certificate, key) -> Identity:
    cert_path = os.path.join(folder, f"{stem}.crt")
    key_path = os.path.join(folder, f"{stem}.key")
    with open(cert_path, "wb") as out:
        out.write(certificate.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as out:
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    os.chmod(key_path, 0o600)
    return Identity(cert_path, key_path, certificate.subject.rfc4514_string(), certificate, key)


def _builder(subject: x509.Name, issuer: x509.Name, public_key, days: int = 2) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
    )


class CertificateAuthority:
    """
    A CA that issues server and client certificates into ``folder``: a root,
    or, with ``issuer``, an intermediate CA under it, whose certificates'
    files hold the certificate and then the intermediate's (the chain).
    """

    def __init__(
        self, folder: str, name: str = "radx test CA", issuer: CertificateAuthority | None = None, path_length: int = 0
    ) -> None:
        os.makedirs(folder, exist_ok=True)
        self.folder = folder
        self.stem = name.replace(" ", "-")
        self.issuer = issuer
        key = ec.generate_private_key(ec.SECP256R1())
        subject = _name(name)
        signer = issuer.identity if issuer is not None else None
        builder = _builder(subject, signer.certificate.subject if signer else subject, key.public_key())
        if signer is not None:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.private_key.public_key()), critical=False
            )
        certificate = (
            builder
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(signer.private_key if signer else key, hashes.SHA256())
        )
        self.identity = _write(folder, self.stem, certificate, key)

    @property
    def cert(self) -> str:
        return self.identity.cert

    def issue(self, stem: str, common_name: str, server: bool) -> Identity:
        key = ec.generate_private_key(ec.SECP256R1())
        ca = self.identity
        builder = (
            _builder(_name(common_name), ca.certificate.subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.private_key.public_key()), critical=False
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        certificate = builder.sign(ca.private_key, hashes.SHA256())
        identity = _write(self.folder, stem, certificate, key)
        if self.issuer is not None:
            # The chain a peer that trusts only the root needs: then the intermediate.
            with open(identity.cert, "ab") as out:
                out.write(ca.certificate.public_bytes(serialization.Encoding.PEM))
        return identity


class PKI:
    """One CA with a server and a client certificate, and a second CA with a client certificate of its own."""

    def __init__(self, folder: str) -> None:
        self.ca = CertificateAuthority(os.path.join(folder, "ca"))
        self.server = self.ca.issue("server", "localhost", server=True)
        self.client = self.ca.issue("client", "modality-1", server=False)
        self.other_ca = CertificateAuthority(os.path.join(folder, "other-ca"), "other test CA")
        self.stranger = self.other_ca.issue("stranger", "stranger", server=False)


class ChainPKI:
    """A root CA, an intermediate CA under it, and a server and a client certificate from the intermediate."""

    def __init__(self, folder: str) -> None:
        self.root = CertificateAuthority(os.path.join(folder, "root"), "radx test root CA", path_length=1)
        self.intermediate = CertificateAuthority(
            os.path.join(folder, "intermediate"), "radx test intermediate CA", issuer=self.root
        )
        self.server = self.intermediate.issue("server", "localhost", server=True)
        self.client = self.intermediate.issue("client", "modality-2", server=False)
