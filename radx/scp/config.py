# -*- test-case-name: tests.test_app_config,tests.test_scp_protocol -*-
"""What the server and each association know of its configuration: ServerConfig, a part of radx.app.config's ScpConfig.

Its fields carry their defaults, once: the command line takes its own from
them. Nothing here loads Twisted, so the command line can read them before
it chooses whether the reactor gets TLS.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from radx.events.command import HookSettings
from radx.storage.filing import Filing
from radx.ul.negotiation import AcceptorPolicy


@dataclass(frozen=True)
class ServerConfig:
    """Everything an association needs to know about the server it belongs to."""

    policy: AcceptorPolicy = field(default_factory=AcceptorPolicy)
    output_dir: str = "./dicom-received"
    # Where each instance is filed, and what if its file exists (--organize, --layout, --on-duplicate).
    filing: Filing = field(default_factory=Filing)
    # Durable writes: fsync of file and folder before Success (--fsync).
    fsync: bool = True
    max_conns: int = 10
    # Connections not yet associated (--max-pending), counted apart from
    # --max-conns: past it, the oldest of them is closed.
    max_pending: int = 256
    # PS3.8 9.1.5: ARTIM bounds the wait for an A-ASSOCIATE-RQ and for the
    # peer to close after a release or abort.
    artim_timeout: float = 30.0
    # An established association on which nothing arrives is aborted.
    idle_timeout: float = 120.0
    # A PDU, once begun, must arrive in full within this many seconds: a
    # sender trickling bytes cannot hold an association open.
    dimse_timeout: float = 60.0
    # At shutdown, how long operations in progress may take to finish.
    drain_timeout: float = 30.0
    # Peers allowed to connect (--allow-ip); None: every address.
    allowed_networks: tuple | None = None
    # Permissions of the files and folders radx creates (--file-mode,
    # --dir-mode): owner-only, since the files hold health information.
    file_mode: int = 0o600
    dir_mode: int = 0o700
    # The catalogue each stored instance is recorded in (--catalogue), or None.
    catalogue: str | None = None
    # The name of this server's rows in a catalogue that several share
    # (--catalogue-node); None: the host's name.
    catalogue_node: str | None = None
    # The hooks and events (--exec-on-*, --events), or None.
    hooks: HookSettings | None = None
