# -*- test-case-name: tests.test_app_config,tests.test_scu_cli,tests.test_scu_tls -*-
"""
The configuration of `radx dicom echo` and `radx dicom store`, typed, and the flag that sets each field.

As radx.app.config is the SCP's: a default is written once, on its
field, and the flags' tables (CLIENT_FLAGS, which both commands share,
ECHO_FLAGS, STORE_FLAGS) take it from there. Their options build the
configuration once, at the end of parsing; the commands read typed
fields only:

    EchoConfig, StoreConfig
      peer: Peer                 host, port; tls: ClientTLS, or None
      association: RequestorConfig (radx.scu.config)
      count; or files, folder, recursive, connections, operations
"""

from __future__ import annotations

from dataclasses import dataclass, field

from radx.app import flag_values as values
from radx.app.config import DEFAULT_PORT, Flag, TLSFiles
from radx.scu.config import RequestorConfig


@dataclass(frozen=True)
class ClientTLS(TLSFiles):
    """
    The requestor's TLS: the server's certificate must chain to ``ca``
    (None: the system's CAs) and name ``server_name`` (None: the host's
    name); ``certificate`` and ``key`` for a server that requires a
    client certificate.
    """

    server_name: str | None = None


@dataclass(frozen=True)
class Peer:
    """The SCP to reach."""

    host: str = "localhost"
    port: int = DEFAULT_PORT
    # None: plain TCP.
    tls: ClientTLS | None = None


@dataclass(frozen=True)
class EchoConfig:
    """`radx dicom echo HOST [PORT]`."""

    peer: Peer = field(default_factory=Peer)
    association: RequestorConfig = field(default_factory=RequestorConfig)
    # C-ECHO requests sent, one after the other, on one association.
    count: int = 1


@dataclass(frozen=True)
class StoreConfig:
    """`radx dicom store FILE... | --dir DIR`."""

    peer: Peer = field(default_factory=Peer)
    association: RequestorConfig = field(default_factory=RequestorConfig)
    files: tuple[str, ...] = ()
    # --dir: a folder whose files are sent; its folders' too when recursive.
    folder: str | None = None
    recursive: bool = False
    # Associations the files are spread over, at once.
    connections: int = 1
    # C-STOREs asked to be outstanding at once on an association (PS3.7
    # D.3.3.3); peers that grant no window get one at a time.
    operations: int = 8


# What echo and store share: the association's flags, and TLS's.
CLIENT_FLAGS = (
    Flag("called-ae", RequestorConfig, "called_ae_title", "AE title of the peer (the called AE).", values.ae_title),
    Flag("calling-ae", RequestorConfig, "calling_ae_title", "AE title of this side (the calling AE).", values.ae_title),
    Flag("max-pdu", RequestorConfig, "maximum_length", "Largest P-DATA PDU this side receives (advertised to the peer).", values.pdu_length),
    Flag("timeout", RequestorConfig, "timeout", "Seconds to wait for the connection, the association, each response.", values.seconds),
    Flag("tls-ca", ClientTLS, "ca", "PEM CA certificate(s) the server's certificate must chain to (implies --tls; default: the system's)."),
    Flag("tls-cert", ClientTLS, "certificate", "PEM certificate (and chain) of this side, for a server that requires one (implies --tls)."),
    Flag("tls-key", ClientTLS, "key", "PEM private key of --tls-cert (unencrypted)."),
    Flag("tls-server-name", ClientTLS, "server_name", "Name the server's certificate must carry, if not HOST (implies --tls)."),
    Flag("tls", None, None, "Use DICOM TLS (TLS 1.2 or newer), verifying the server's certificate and name.", switch=True),
)  # fmt: skip

# radx dicom echo's: HOST and PORT are positional.
ECHO_FLAGS = CLIENT_FLAGS + (
    Flag("count", EchoConfig, "count", "C-ECHO requests to send, one after the other, on one association.", values.count),
)  # fmt: skip

# radx dicom store's: FILE... positional.
STORE_FLAGS = CLIENT_FLAGS + (
    Flag("host", Peer, "host", "Host of the peer."),
    Flag("port", Peer, "port", "Port of the peer.", values.port),
    Flag("dir", StoreConfig, "folder", "Send the files in this folder (with --recursive, its folders too)."),
    Flag("conns", StoreConfig, "connections", "Associations to spread the files over, at once.", values.positive_int),
    Flag("max-ops", StoreConfig, "operations", "C-STOREs outstanding at once on each association where the peer grants an Asynchronous Operations Window (1: one at a time, no window proposed).", values.count),
    Flag("recursive", StoreConfig, "recursive", "With --dir, descend into its folders.", short="r", switch=True),
)  # fmt: skip
