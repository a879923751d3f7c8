# -*- test-case-name: tests.test_app_options -*-
"""The command line of the SCP, one for `radx dicom scp` and `twistd radx-scp`: ScpOptions, made from radx.app.config's SCP_FLAGS; and what every `radx dicom` command's options share: CommandOptions, made from its table of flags."""

from __future__ import annotations

import sys

from twisted.python import usage

from radx import __version__
from radx.app import flag_values as values
from radx.app.config import DEFAULT_PORT, SCP_FLAGS, Flag, ScpConfig, config_from_options
from radx.storage.layout import FLAT_LAYOUT, ORGANIZED_LAYOUT, Layout, LayoutError


def parameters(flags: tuple[Flag, ...]) -> list:
    """Twisted's optParameters of the flags with one value: each default the one its field carries."""
    return [
        [flag.name, flag.short, flag.written_default, flag.help, values.named(flag.name, flag.parse) if flag.parse else None]
        for flag in flags
        if not (flag.switch or flag.repeatable)
    ]


def switches(flags: tuple[Flag, ...]) -> list:
    """Twisted's optFlags of the switches among the flags."""
    return [[flag.name, flag.short, flag.help] for flag in flags if flag.switch]


def repeated(flag: Flag):
    """The opt_ method of a repeatable flag: each value parsed, its error named, and added to those given."""
    parse = values.named(flag.name, flag.parse) if flag.parse else str

    def add(self, value: str) -> None:
        try:
            self[flag.name].append(parse(value))
        except ValueError as error:
            raise usage.UsageError(str(error)) from None

    add.__doc__ = flag.help
    return add


def check_layout(options: usage.Options) -> None:
    """Compile --layout (or --organize's) once, at start, into options["layout"]."""
    template = options["layout"]
    if template is None:
        options["layout"] = ORGANIZED_LAYOUT if options["organize"] else FLAT_LAYOUT
        return
    if not options["organize"]:
        raise usage.UsageError("--layout and --organize=false do not go together: the template says where files go")
    try:
        options["layout"] = Layout(template)
    except LayoutError as error:
        raise usage.UsageError(f"--layout: {error}") from None


# Flags that are booleans with a default of true: they take `--flag`,
# `--flag=true` and `--flag=false`, as the reference's examples write them.
BOOLEAN_FLAGS = tuple(flag.name for flag in SCP_FLAGS if flag.parse is values.boolean)


_COERCION_PREFIX = "Parameter type enforcement failed: "


class CommandOptions(usage.Options):
    """
    Options of a `radx dicom` command: positionals may come first, errors
    name their flag. A command's flags are its table (``flags``, of
    radx.app.config.Flag): Twisted's optParameters and optFlags, and the
    opt_ method of each repeatable flag, are made from it, and each value
    starts as its field's default, typed.
    """

    flags: tuple[Flag, ...] = ()

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "flags" not in cls.__dict__:
            return
        cls.optParameters = parameters(cls.flags)
        cls.optFlags = switches(cls.flags)
        for flag in cls.flags:
            if flag.repeatable:
                method = repeated(flag)
                setattr(cls, "opt_" + flag.name.replace("-", "_"), method)
                if flag.short:
                    setattr(cls, "opt_" + flag.short, method)

    def __init__(self) -> None:
        super().__init__()
        # Values start as their fields' defaults, typed; --help shows them as written.
        for flag in self.flags:
            if flag.repeatable:
                self[flag.name] = []
            elif not flag.switch:
                self[flag.name] = flag.default

    def opt_version(self) -> None:
        """Print the version and exit."""
        print(f"radx {__version__.public()}")
        sys.exit(0)

    # -h is --help, as in most commands.
    opt_h = usage.Options.opt_help

    def parseOptions(self, options=None) -> None:
        if options is None:
            options = sys.argv[1:]
        try:
            super().parseOptions(positionals_last(self, options))
        except usage.UsageError as error:
            # Twisted words a failed coercion without the flag; ours name it.
            message = str(error)
            if message.startswith(_COERCION_PREFIX):
                raise usage.UsageError(message[len(_COERCION_PREFIX) :]) from None
            raise


class ScpOptions(CommandOptions):
    """radx dicom scp [PORT] [flags]"""
    longdesc = (
        "Run a DICOM SCP that accepts associations, answers C-ECHO and files every "
        f"C-STORE instance on disk (Study/Series/Instance by default). PORT defaults to {DEFAULT_PORT}."
    )

    # Each default is its field's, in radx.app.config.
    flags = SCP_FLAGS

    def __init__(self) -> None:
        super().__init__()
        self["port"] = DEFAULT_PORT
        # Whether PORT (or --port) was given: with --listen, only then is it listened on too.
        self.port_given = False
        # Set by postOptions: the hook commands, split, and the whole parsed, typed (radx.app.config.ScpConfig).
        self.hook_commands: tuple = ()
        self.config = None

    def opt_port(self, port: str) -> None:
        self._port_flag = self._parse_port(port, "--port")

    opt_port.__doc__ = f"Port to listen on: the same as PORT (default: {DEFAULT_PORT})."

    def getSynopsis(self) -> str:
        if self.parent is None:
            return "Usage: radx dicom scp [PORT] [flags]"
        return f"{self.parent.getSynopsis()} {self.parent.subCommand} [PORT] [flags]"

    def parseOptions(self, options=None) -> None:
        if options is None:
            options = sys.argv[1:]
        super().parseOptions(normalise_boolean_flags(options))

    def parseArgs(self, port=None) -> None:
        if port is not None:
            self["port"] = self._parse_port(port, "PORT")
            self.port_given = True
        flag = getattr(self, "_port_flag", None)
        if flag is not None:
            self.port_given = True
            if port is not None and self["port"] != flag:
                raise usage.UsageError(f"PORT is {self['port']} and --port {flag}: give one")
            self["port"] = flag

    @staticmethod
    def _parse_port(port: str, name: str) -> int:
        if not port.isdigit():
            raise usage.UsageError(
                f"{name}: {port!r} is not a port number"
                " (boolean flags take their value with '=', as in --organize=false)"
            )
        try:
            return values.port(port)
        except ValueError as error:
            raise usage.UsageError(f"{name}: {error}") from None

    def postOptions(self) -> None:
        if self["verbose"]:
            self["log-level"] = "debug"
        if self["log-level"] not in ("debug", "info", "warn", "error"):
            raise usage.UsageError(f"--log-level: {self['log-level']!r} is not debug, info, warn or error")
        if self["log-format"] not in ("text", "json"):
            raise usage.UsageError(f"--log-format: {self['log-format']!r} is not text or json")
        check_layout(self)
        self._check_tls()
        self._check_catalogue()
        self._check_listen()
        self.hook_commands = self._hook_commands()
        if self["min-free-space"] and not self["http"]:
            raise usage.UsageError("--min-free-space needs --http: it is what /readyz checks")
        # Parsed: from here on, the server reads this, typed, and never the options.
        self.config = self.configuration()

    def configuration(self) -> ScpConfig:
        return config_from_options(self)

    def _check_catalogue(self) -> None:
        if self["catalogue-node"] is None:
            return
        from radx.catalogue.opening import is_postgresql

        if self["catalogue"] is None or not is_postgresql(self["catalogue"]):
            raise usage.UsageError("--catalogue-node goes with a postgresql:// --catalogue; a SQLite catalogue is one machine's")
        if not self["catalogue-node"].strip():
            raise usage.UsageError("--catalogue-node: the name is empty")

    def _hook_commands(self) -> tuple:
        """The commands of --exec-on-store, --exec-on-series and --exec-on-study, each split and found once, here."""
        kinds = [kind for kind in ("store", "series", "study") if self[f"exec-on-{kind}"] is not None]
        if not kinds:
            return ()
        from radx.events.command import CommandError, find_program, parse_command

        commands = []
        for kind in kinds:
            try:
                command = parse_command(kind, self[f"exec-on-{kind}"])
                find_program(command)
            except CommandError as error:
                raise usage.UsageError(f"--exec-on-{kind}: {error}") from None
            commands.append(command)
        return tuple(commands)

    @property
    def listens_on_port(self) -> bool:
        """Whether PORT (on --bind, or every interface) is listened on: always without --listen."""
        return not self["listen"] or self.port_given or self["bind"] is not None

    def _check_listen(self) -> None:
        proxied = [description for description in self["listen"] if is_proxied(description)]
        if proxied and not self["trusted-proxy"]:
            raise usage.UsageError(
                f"--listen {proxied[0]}: a PROXY header names any address it likes;"
                " give --trusted-proxy, the proxies it is read from"
            )
        if self["trusted-proxy"] and not proxied:
            raise usage.UsageError("--trusted-proxy needs a --listen haproxy: endpoint, where PROXY headers are read")
        if self.tls and not self.listens_on_port and self["tls-port"] is None:
            raise usage.UsageError(
                "--tls-cert with --listen: give PORT or --tls-port for TLS; --listen endpoints are plain TCP"
            )

    def _check_tls(self) -> None:
        if bool(self["tls-cert"]) != bool(self["tls-key"]):
            raise usage.UsageError("--tls-cert and --tls-key go together")
        if not self["tls-cert"]:
            for flag in ("tls-ca", "tls-port"):
                if self[flag] is not None:
                    raise usage.UsageError(f"--{flag} needs --tls-cert and --tls-key")
        if self["require-peer-cert"] and not self["tls-ca"]:
            raise usage.UsageError("--require-peer-cert needs --tls-ca, the CA that signs client certificates")
        if self["tls-port"] is not None and self["tls-port"] == self["port"] and self["port"] != 0:
            raise usage.UsageError(f"--tls-port: {self['tls-port']} is PORT already; leave --tls-port out for TLS only")

    @property
    def tls(self) -> bool:
        return bool(self["tls-cert"])


PROXIED_PREFIX = "haproxy:"


def is_proxied(description: str) -> bool:
    """Whether a --listen endpoint reads a PROXY header first (``haproxy:`` and the endpoint it wraps)."""
    return description.startswith(PROXIED_PREFIX)


def positionals_last(options: usage.Options, arguments: list[str]) -> list[str]:
    """Let positionals stand before the flags (`radx dicom scp 11113 --aet X`), which getopt does not."""
    takes_value = {f"--{name[:-1]}" for name in options.longOpt if name.endswith("=")}
    flags: list[str] = []
    positionals: list[str] = []
    index = 0
    while index < len(arguments):
        argument = arguments[index]
        index += 1
        if argument == "--":
            positionals.extend(arguments[index:])
            break
        if argument.startswith("-") and argument != "-":
            flags.append(argument)
            if argument in takes_value:
                # `--aet --organize=false` is a missing value, not the AE title "--organize=false".
                if index == len(arguments) or _looks_like_a_flag(arguments[index]):
                    raise usage.UsageError(f"{argument}: needs a value")
                flags.append(arguments[index])
                index += 1
        else:
            positionals.append(argument)
    return flags + ["--"] + positionals if positionals else flags


def _looks_like_a_flag(argument: str) -> bool:
    """``--name``, ``--name=value``, ``-v``: not ``-`` alone, nor a negative number."""
    if not argument.startswith("-") or argument == "-":
        return False
    try:
        float(argument)
    except ValueError:
        return True
    return False


def normalise_boolean_flags(arguments: list[str]) -> list[str]:
    """Turn a bare `--organize` into `--organize=true`; leave `--organize=false` be."""
    bare = {f"--{name}" for name in BOOLEAN_FLAGS}
    return [f"{argument}=true" if argument in bare else argument for argument in arguments]
