# -*- test-case-name: tests.test_app_config,tests.test_app_options -*-
"""
The configuration of `radx dicom scp` and `twistd radx-scp`, typed: ScpConfig and its parts, and SCP_FLAGS, the flag that sets each field.

A default is written once, on its field; the flag takes it from there
(radx.app.options builds ScpOptions from SCP_FLAGS). Once the command
line is parsed, config_from_options turns it into an ScpConfig, and from
there on everything reads typed fields:

    ScpConfig
      server: ServerConfig (radx.scp.config): the factory's and each association's
        policy: AcceptorPolicy (radx.ul.negotiation): what the association negotiation accepts
        filing: Filing (radx.storage.filing): where an instance goes, what if its file exists
        hooks: HookSettings (radx.events.command), or None
      listening: Listening          tls: TLSConfig, or None
      threads, workers, stats_interval, log_level, log_format, http, min_free_space

A new flag: a field (and its default) in the part it belongs to, and a
line in SCP_FLAGS, repeatable=True if it may be given several times;
config_from_options fills the field. Flag and part_from serve every
command's table and configuration alike (radx.app.client_config, ...).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

from radx.app import flag_values as values
from radx.events.command import HookSettings
from radx.scp.config import ServerConfig
from radx.storage.filing import Filing
from radx.ul.negotiation import AcceptorPolicy

DEFAULT_PORT = 11112


@dataclass(frozen=True)
class Listening:
    """Where the server listens: PORT, on --bind or on every interface, and each --listen endpoint."""

    port: int = DEFAULT_PORT
    bind: str | None = None
    # Whether PORT is listened on: always without --listen; with it, only
    # if PORT, --port or --bind is given.
    on_port: bool = True
    # --listen: Twisted server endpoint descriptions, as given.
    endpoints: tuple[str, ...] = ()
    # --trusted-proxy: the networks whose PROXY headers (haproxy: endpoints) are read.
    trusted_proxies: tuple = ()


@dataclass(frozen=True)
class TLSFiles:
    """DICOM TLS (PS3.15 B.9): the PEM files of one side, its certificate and key, and the CA the other side's must chain to."""

    certificate: str | None = None
    key: str | None = None
    ca: str | None = None


@dataclass(frozen=True)
class TLSConfig(TLSFiles):
    """
    The SCP's TLS: its certificate and key; clients must present a
    certificate ``ca`` signed (mutual TLS), none is asked for without it.
    """

    # --tls-port: TLS there and plain TCP on PORT; None: PORT is TLS only.
    port: int | None = None


@dataclass(frozen=True)
class ScpConfig:
    """Everything the SCP was told at start, each part beside those who read it."""

    server: ServerConfig = field(default_factory=ServerConfig)
    listening: Listening = field(default_factory=Listening)
    # None: no TLS.
    tls: TLSConfig | None = None
    # Threads for file system work (in each worker, with workers).
    threads: int = 4
    # Processes serving the same ports (radx.app.supervisor); 1: this one alone.
    workers: int = 1
    stats_interval: float = 30.0
    log_level: str = "info"
    log_format: str = "text"
    # --http: the Twisted endpoint of /metrics, /healthz and /readyz; None: none.
    http: str | None = None
    # /readyz answers 503 below this many bytes free for the output folder; 0: no such check.
    min_free_space: int = 0


@dataclass(frozen=True)
class Flag:
    """A flag of a command and the field it sets: the field's default is the flag's."""

    name: str
    # The dataclass whose field the flag sets; None: a flag that shapes
    # others (--verbose, --exec-on-*), not given by default.
    part: type | None
    field: str | None
    help: str
    # A radx.app.flag_values parser; its errors are said with the flag's name.
    parse: Callable | None = None
    short: str | None = None
    # A switch: given or not, without a value; its field's default is false.
    switch: bool = False
    # The default as written on the command line, for --help, where str() writes it otherwise.
    written: Callable | None = None
    # Repeatable: each value is parsed as it comes, and kept in order; the
    # field gets them all, made into what collect makes (a tuple, a
    # frozenset), or keeps its default when none is given.
    repeatable: bool = False
    collect: Callable = tuple

    @property
    def default(self):
        if self.part is None:
            return False if self.switch else None
        [found] = [each for each in dataclasses.fields(self.part) if each.name == self.field]
        if found.default_factory is not dataclasses.MISSING:
            return found.default_factory()
        return found.default

    @property
    def written_default(self):
        default = self.default
        return default if self.written is None or default is None else self.written(default)


def part_from(kind: type, flags: tuple[Flag, ...], options, **others):
    """
    A ``kind`` made of parsed options: each field that one of ``flags`` sets,
    as parsed, and ``others`` as given; any other field keeps its default.
    Once, at the end of parsing: the one place that reads every command's
    options by their flags' names.
    """
    given = {}
    for flag in flags:
        if flag.part is not kind:
            continue
        value = options[flag.name]
        if flag.switch:
            # Twisted counts a switch given: 0 or 1.
            value = bool(value)
        elif flag.repeatable:
            if not value:
                continue
            value = flag.collect(value)
        given[flag.field] = value
    return kind(**given, **others)


# --layout, --organize and --on-duplicate: how the server, and `radx dicom organize`, file an instance.
FILING_FLAGS = (
    Flag("organize", Filing, "organize", "Auto-organize files by Study/Series/Instance UID.", values.boolean),
    Flag("layout", Filing, "layout", "Path of each file below the output folder, DICOM keywords in braces, such as {PatientID}/{StudyDate}/{SOPInstanceUID}.dcm (instead of --organize's)."),
    Flag("on-duplicate", Filing, "on_duplicate", "For an instance whose file exists: replace, keep (the first), unique (both, under another name) or reject (status 0111).", values.on_duplicate),
)  # fmt: skip

# The flags of `radx dicom scp` and `twistd radx-scp` but PORT and --port
# (radx.app.options.ScpOptions' opt_port and parseArgs).
SCP_FLAGS = (
    Flag("aet", AcceptorPolicy, "ae_title", "Application Entity Title for this SCP.", values.ae_title),
    Flag("sop-class", AcceptorPolicy, "sop_classes", "Accepted SOP Class UID; repeat for several (default: all storage SOP classes).", values.storage_sop_class, repeatable=True, collect=frozenset),
    Flag("transfer-syntax", AcceptorPolicy, "transfer_syntaxes", "Accepted Transfer Syntax UID; repeat for several (default: every standard one).", values.uid, repeatable=True),
    Flag("allow-calling-aet", AcceptorPolicy, "calling_ae_titles", "Accept associations only from this calling AE title; repeat for several (default: any).", values.ae_title, repeatable=True, collect=frozenset),
    Flag("allow-ip", ServerConfig, "allowed_networks", "Accept connections only from this address or CIDR network, IPv4 or IPv6; repeat for several (default: any).", values.network, repeatable=True),
    Flag("output-dir", ServerConfig, "output_dir", "Directory to store received files."),
    Flag("max-pdu", AcceptorPolicy, "maximum_pdu_length", "Maximum PDU size in bytes (advertised in A-ASSOCIATE-AC).", values.pdu_length),
    Flag("max-conns", ServerConfig, "max_conns", "Maximum concurrent associations.", values.positive_int),
    Flag("max-pending", ServerConfig, "max_pending", "Maximum connections not yet associated; past it the oldest is closed.", values.positive_int),
    Flag("bind", Listening, "bind", "Address to listen on, IPv4 or IPv6 (default: all interfaces, IPv4 and IPv6)."),
    Flag("listen", Listening, "endpoints", "Listen where this Twisted server endpoint says, such as tcp:11112:interface=10.0.0.2, systemd:domain=INET:index=0 or haproxy:tcp:11112; repeat for several. With it, PORT and --bind are listened on only if given.", values.endpoint, repeatable=True),
    Flag("trusted-proxy", Listening, "trusted_proxies", "Read PROXY headers (haproxy: endpoints of --listen) only from this address or CIDR network; repeat for several.", values.network, repeatable=True),
    *FILING_FLAGS,
    Flag("accept-echo", AcceptorPolicy, "accept_echo", "Accept C-ECHO verification requests.", values.boolean),
    Flag("fsync", ServerConfig, "fsync", "fsync each file and folder before answering Success.", values.boolean),
    Flag("artim-timeout", ServerConfig, "artim_timeout", "Seconds a new connection may take to send its A-ASSOCIATE-RQ, and the peer to close after a release or an abort (the ARTIM timer of the DICOM upper layer, PS3.8).", values.seconds),
    Flag("idle-timeout", ServerConfig, "idle_timeout", "Seconds an association may stay silent before it is aborted.", values.seconds),
    Flag("dimse-timeout", ServerConfig, "dimse_timeout", "Seconds a PDU may take to arrive, from its first byte to its last (DIMSE: DICOM's message exchange, PS3.7).", values.seconds),
    Flag("drain-timeout", ServerConfig, "drain_timeout", "Seconds, at shutdown, for operations in progress to finish.", values.seconds),
    Flag("threads", ScpConfig, "threads", "Threads for file system work.", values.positive_int),
    Flag("workers", ScpConfig, "workers", "Processes that serve the same ports, each with its reactor and threads; auto: one per CPU. 1: one process.", values.workers),
    Flag("catalogue", ServerConfig, "catalogue", "SQLite file, or postgresql:// URL, in which each stored instance is recorded, as radx dicom catalogue indexes it.", values.catalogue_target),
    Flag("catalogue-node", ServerConfig, "catalogue_node", "With a postgresql:// --catalogue: the name this server's rows carry, unique among the servers that share it (default: this host's name)."),
    Flag("exec-on-store", None, None, "Command run after each instance is stored and its Success sent; no shell, placeholders #p #f #a #c #r #{SOPInstanceUID} ... (docs/usage.rst)."),
    Flag("exec-on-series", None, None, "Command run once a series has received nothing for --series-timeout seconds."),
    Flag("exec-on-study", None, None, "Command run once a study has received nothing for --study-timeout seconds, over every association."),
    Flag("series-timeout", HookSettings, "series_timeout", "Seconds of quiet after a series' last instance before it is complete.", values.seconds),
    Flag("study-timeout", HookSettings, "study_timeout", "Seconds of quiet after a study's last instance before it is complete.", values.seconds),
    Flag("exec-concurrency", HookSettings, "concurrency", "Hooks running at once; more wait their turn.", values.positive_int),
    Flag("exec-timeout", HookSettings, "timeout", "Seconds a hook may run before it is killed.", values.seconds),
    Flag("events", HookSettings, "events", "File to which a JSON line is appended for each instance stored, series and study complete, and hook run."),
    Flag("stats-interval", ScpConfig, "stats_interval", "Seconds between statistics log lines.", values.seconds),
    Flag("log-level", ScpConfig, "log_level", "Lowest level logged: debug, info, warn, error."),
    Flag("log-format", ScpConfig, "log_format", "Log lines as text, or as one JSON object a line (json)."),
    Flag("tls-cert", TLSConfig, "certificate", "PEM certificate (and chain) of this SCP: enables DICOM TLS."),
    Flag("tls-key", TLSConfig, "key", "PEM private key of --tls-cert (unencrypted)."),
    Flag("tls-ca", TLSConfig, "ca", "PEM CA certificate(s): clients must present a certificate it signed (mutual TLS)."),
    Flag("tls-port", TLSConfig, "port", "Port for TLS (2762 is DICOM-TLS's); PORT stays plain TCP. Without it, PORT is TLS only.", values.port),
    Flag("file-mode", ServerConfig, "file_mode", "Permissions of the files radx creates (octal).", values.mode, written=values.octal),
    Flag("dir-mode", ServerConfig, "dir_mode", "Permissions of the folders radx creates (octal).", values.mode, written=values.octal),
    Flag("http", ScpConfig, "http", "Twisted endpoint for HTTP /metrics, /healthz and /readyz, such as tcp:9112:interface=127.0.0.1 (default: none)."),
    Flag("min-free-space", ScpConfig, "min_free_space", "/readyz answers 503 while the output folder's file system has less free (0: no such check).", values.size),
    Flag("verbose", None, None, "Log at debug level (same as --log-level debug).", short="v", switch=True),
    Flag("accept-any-called-aet", AcceptorPolicy, "accept_any_called_ae_title", "Accept any called AE title, not only --aet (DCMTK's default ANY-SCP among them).", switch=True),
    Flag("require-peer-cert", None, None, "Require a client certificate signed by --tls-ca (implied by --tls-ca).", switch=True),
)  # fmt: skip


def config_from_options(options) -> ScpConfig:
    """
    The ScpConfig of parsed radx.app.options.ScpOptions: once, at the end
    of their parsing. Each field a flag sets comes from SCP_FLAGS; what
    is left here is which part sits in which, and what no flag sets alone.
    """

    def part(kind: type, **others):
        return part_from(kind, SCP_FLAGS, options, **others)

    hooks = None
    if options.hook_commands or options["events"]:
        hooks = part(HookSettings, commands=options.hook_commands)
    return part(
        ScpConfig,
        server=part(ServerConfig, policy=part(AcceptorPolicy), filing=part(Filing), hooks=hooks),
        listening=part(Listening, port=options["port"], on_port=options.listens_on_port),
        tls=part(TLSConfig) if options["tls-cert"] else None,
    )


@dataclass(frozen=True)
class TwistdLog:
    """Where twistd logs, as its own flags say (--logfile, --nodaemon, --syslog): twistd radx-scp's log lines go there."""

    # --logfile: a file, or "-" for stdout; None: twistd.log, or stdout with --nodaemon.
    logfile: str | None = None
    nodaemon: bool = False
    syslog: bool = False


def twistd_log_from(twistd_options) -> TwistdLog:
    """The TwistdLog of twistd's parsed options (radx-scp's parent), or the default without them."""
    if twistd_options is None:
        return TwistdLog()
    return TwistdLog(
        logfile=twistd_options.get("logfile") or None,
        nodaemon=bool(twistd_options.get("nodaemon")),
        syslog=bool(twistd_options.get("syslog")),
    )
