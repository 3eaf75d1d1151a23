"""Command line: ``edged run | check | config schema | models … | demo | cloud serve``.

Exit codes follow sysexits.h where systemd cares: 78 (EX_CONFIG) for an
invalid configuration, which the unit lists in ``RestartPreventExitStatus``
so that a broken config fails once instead of restarting in a loop.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog

from edged import __version__
from edged.catalog.catalog import Catalog, load_catalog
from edged.config.settings import DEFAULT_CONFIG, Settings, load_settings
from edged.daemon.memory import cap_malloc_arenas
from edged.errors import (
    EX_CONFIG,
    EX_FAILURE,
    EX_INTERRUPTED,
    EX_OK,
    EX_PIPE,
    EX_UNAVAILABLE,
    CatalogError,
    ConfigError,
    EdgedError,
)
from edged.log import configure_logging, quiet_native_libraries

LOG_LEVELS = ("debug", "info", "warning", "error")

log = structlog.get_logger("edged")


def _print_problems(problems: Sequence[tuple[str, str]], *, header: str) -> None:
    print(header, file=sys.stderr)
    for key, msg in problems:
        print(f"  {key}: {msg}", file=sys.stderr)


def _load(path: Path) -> Settings:
    return load_settings(path)


def cmd_check(args: argparse.Namespace) -> int:
    from edged.daemon.check import preflight

    try:
        settings = _load(args.config)
        catalog = load_catalog(settings.models.catalog, models_dir=settings.models.dir)
    except ConfigError as exc:
        _print_problems(exc.problems, header=f"{args.config}: invalid configuration")
        return EX_CONFIG
    except CatalogError as exc:
        _print_problems(
            [("models.catalog", str(exc))], header=f"{args.config}: invalid configuration"
        )
        return EX_CONFIG
    result = preflight(settings, catalog, connect_broker=not args.offline)
    result.close()
    for key, msg in result.warnings:
        print(f"warning: {key}: {msg}", file=sys.stderr)
    if result.problems:
        _print_problems(result.problems, header=f"{args.config}: {len(result.problems)} problem(s)")
        return EX_CONFIG
    print(
        f"{args.config}: OK ({len(settings.sources)} sources, {len(settings.pipelines)} pipelines)"
    )
    return EX_OK


def cmd_run(args: argparse.Namespace) -> int:
    from edged.daemon.app import run_daemon

    if args.log_level is not None:
        # The daemon takes its level from the settings, where the environment
        # overrides the file (EDGED_LOG_LEVEL); so does --log-level, and it
        # keeps doing so across reloads, which re-read the environment.
        os.environ["EDGED_LOG_LEVEL"] = args.log_level
    return run_daemon(args.config)


def cmd_config_schema(_args: argparse.Namespace) -> int:
    json.dump(Settings.model_json_schema(), sys.stdout, indent=2)
    print()
    return EX_OK


def cmd_config_reference(_args: argparse.Namespace) -> int:
    from edged.config.reference import reference_markdown

    print(reference_markdown())
    return EX_OK


def _catalog_and_settings(args: argparse.Namespace) -> tuple[Settings, Catalog]:
    settings = (
        _load(args.config) if args.config.is_file() or args.config != DEFAULT_CONFIG else Settings()
    )
    if args.models_dir is not None:
        settings = settings.model_copy(
            update={"models": settings.models.model_copy(update={"dir": args.models_dir})}
        )
    return settings, load_catalog(settings.models.catalog, models_dir=settings.models.dir)


def cmd_models_list(args: argparse.Namespace) -> int:
    from edged.catalog.fetch import verify

    settings, catalog = _catalog_and_settings(args)
    print(f"{'name':28} {'task':10} {'runtime':12} {'size':>9}  installed")
    for e in catalog.models:
        ok = verify(e.file, settings.models.dir / e.file.name) is None
        size = f"{e.file.size / 1e6:7.1f}MB"
        print(f"{e.name:28} {e.task:10} {e.runtime:12} {size}  {'yes' if ok else 'no'}")
    return EX_OK


def cmd_models_pull(args: argparse.Namespace) -> int:
    from edged.catalog.fetch import pull
    from edged.catalog.resolve import mirror_dir
    from edged.label.cli import DownloadBars

    settings, catalog = _catalog_and_settings(args)
    names = args.names or catalog.names()
    mirror = args.mirror or mirror_dir(settings)
    failed = 0
    for name in names:
        try:
            for item in pull(
                catalog.get(name), settings.models.dir, mirror=mirror, progress=DownloadBars()
            ):
                print(f"{name}: {item.name} ({item.origin})")
        except EdgedError as exc:
            failed += 1
            print(f"{name}: FAILED: {exc}", file=sys.stderr)
    return EX_FAILURE if failed else EX_OK


def cmd_models_verify(args: argparse.Namespace) -> int:
    from edged.catalog.fetch import verify

    settings, catalog = _catalog_and_settings(args)
    bad = 0
    for e in catalog.models:
        problems = [p for a in e.artifacts() if (p := verify(a, settings.models.dir / a.name))]
        status = "ok" if not problems else "; ".join(problems)
        bad += bool(problems)
        print(f"{e.name}: {status}")
    return EX_FAILURE if bad else EX_OK


def cmd_models_labels(args: argparse.Namespace) -> int:
    from edged.catalog.labels import entry_labels
    from edged.catalog.resolve import mirror_dir

    settings, catalog = _catalog_and_settings(args)
    if "/" in args.name or args.name.endswith((".onnx", ".tflite")):
        raise CatalogError(
            f"{args.name} is a model file, not a catalog name: its labels are the lines of "
            "the pipeline's label_file"
        )
    names = entry_labels(catalog, catalog.get(args.name), settings.models.dir, mirror_dir(settings))
    sys.stdout.write("".join(f"{n}\n" for n in names))
    return EX_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from edged.demo.run import run_demo

    return run_demo(duration_s=args.duration, workdir=args.workdir, media=args.media)


def cmd_cloud_serve(args: argparse.Namespace) -> int:
    try:
        from edged.offload.server import ServeOptions, serve
    except ModuleNotFoundError as exc:  # aiohttp comes with the 'cloud' extra
        if exc.name != "aiohttp":
            raise
        print("edged: aiohttp is not installed: pip install 'edged[cloud]'", file=sys.stderr)
        return EX_UNAVAILABLE
    configure_logging(args.log_level or "info")
    settings, catalog = _catalog_and_settings(args)
    options = ServeOptions(
        model=args.model,
        host=args.host,
        port=args.port,
        token_file=args.token_file,
        cert=args.cert,
        key=args.key,
        threads=args.threads,
        max_body_mb=args.max_body_mb,
        decoder=args.decoder,
        max_pixels=args.max_pixels,
        max_connections=args.max_connections,
        header_timeout_s=args.header_timeout_s,
        body_timeout_s=args.body_timeout_s,
    )
    serve(options, settings, catalog)
    return EX_OK


def _add_cloud(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cloud = sub.add_parser("cloud", help="the reference cloud model server").add_subparsers(
        dest="cloud_cmd", required=True
    )
    p = cloud.add_parser(
        "serve", help="serve a larger model over HTTPS for hybrid offload (docs/cloud-protocol.md)"
    )
    p.add_argument("--config", "-c", type=Path, default=DEFAULT_CONFIG, help="for [models] dir")
    p.add_argument("--models-dir", type=Path, default=None, help="override [models] dir")
    p.add_argument("--model", default="yolox-nano-coco", help="catalog name or model file")
    p.add_argument("--decoder", default="", help="decoder of a model given by path")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8443, help="TCP port")
    p.add_argument("--cert", type=Path, default=None, help="TLS certificate chain (PEM)")
    p.add_argument("--key", type=Path, default=None, help="TLS private key (PEM)")
    p.add_argument(
        "--token-file", type=Path, default=None, help="bearer token (or credential cloud_token)"
    )
    p.add_argument("--threads", type=int, default=2, help="inference threads")
    p.add_argument("--max-body-mb", type=float, default=8.0, help="largest request body, MB")
    p.add_argument(
        "--max-pixels",
        type=int,
        default=40_000_000,
        help="largest image, width x height from its header, checked before decoding",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=256,
        help="open connections at most; the oldest unauthenticated one makes room",
    )
    p.add_argument(
        "--header-timeout-s",
        type=float,
        default=10.0,
        help="from connect to an authenticated request's headers (TLS included), s",
    )
    p.add_argument(
        "--body-timeout-s",
        type=float,
        default=30.0,
        help="to receive a request body once its headers are in, s",
    )
    p.set_defaults(func=cmd_cloud_serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edged", description=__doc__.split("\n", 1)[0] if __doc__ else None
    )
    parser.add_argument("--version", action="version", version=f"edged {__version__}")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default=None, help="log level")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", "-c", type=Path, default=DEFAULT_CONFIG, help="TOML config file")
        return p

    p = with_config(sub.add_parser("run", help="run the daemon"))
    p.set_defaults(func=cmd_run)
    p = with_config(
        sub.add_parser("check", help="validate config and models; exit 78 listing every problem")
    )
    p.add_argument("--offline", action="store_true", help="do not try to connect to the broker")
    p.set_defaults(func=cmd_check)

    cfg = sub.add_parser("config", help="configuration helpers").add_subparsers(
        dest="config_cmd", required=True
    )
    cfg.add_parser("schema", help="print the JSON schema of the config").set_defaults(
        func=cmd_config_schema
    )
    cfg.add_parser("reference", help="print the configuration reference (Markdown)").set_defaults(
        func=cmd_config_reference
    )

    models = sub.add_parser("models", help="model catalog").add_subparsers(
        dest="models_cmd", required=True
    )
    for name, func, helptext in (
        ("list", cmd_models_list, "list catalog models and whether they are installed"),
        ("pull", cmd_models_pull, "download (or copy from a mirror) and verify models"),
        ("verify", cmd_models_verify, "re-hash installed model files"),
        ("labels", cmd_models_labels, "print the label names of a model, one per line"),
    ):
        mp = with_config(models.add_parser(name, help=helptext))
        mp.add_argument("--models-dir", type=Path, default=None, help="override [models] dir")
        mp.set_defaults(func=func)
        if name == "labels":
            mp.add_argument("name", help="catalog name (bundled or made on this device)")
        if name == "pull":
            mp.add_argument("names", nargs="*", help="catalog names (default: all)")
            mp.add_argument("--mirror", type=Path, default=None, help="local mirror directory")
    # bench | quantize | select | report: the nutrition labels (edged.label).
    from edged.label.cli import add_commands as add_label_commands

    add_label_commands(models, with_config, _catalog_and_settings)

    p = sub.add_parser(
        "demo", help="run on sample media with a broker of its own, printing what is published"
    )
    p.add_argument("--duration", type=float, default=20.0, help="seconds to run (0: until Ctrl-C)")
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where models and state go (default: a cache dir)",
    )
    p.add_argument(
        "--media",
        type=Path,
        default=None,
        help="sample media directory (default: EDGED_MEDIA_DIR, else the media shipped with edged)",
    )
    p.set_defaults(func=cmd_demo)
    _add_cloud(sub)
    _add_to_every_command(
        parser, "--log-level", choices=LOG_LEVELS, help="log level (before or after the command)"
    )
    return parser


def _add_to_every_command(parser: argparse.ArgumentParser, *flags: str, **kwargs: object) -> None:
    """Accept an option of the top-level parser after any (sub)command too.

    ``default=SUPPRESS`` on the subcommands: an option given before the
    command is not reset to a default by the subcommand's parser, and one
    given after it lands in the same attribute.
    """
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                if not any(flag in child._option_string_actions for flag in flags):
                    child.add_argument(*flags, default=argparse.SUPPRESS, **kwargs)
                _add_to_every_command(child, *flags, **kwargs)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edged`` console script."""
    # Before anything imports cv2 or a runtime: they read it when they load.
    quiet_native_libraries()
    # Before any thread starts: see edged/daemon/memory.py.
    cap_malloc_arenas()
    try:
        code = _main(argv)
        # Flush here, not at interpreter exit, so that a reader that went
        # away raises below instead of in Python's shutdown.
        sys.stdout.flush()
    except BrokenPipeError:
        return _reader_gone()
    return code


def _reader_gone() -> int:
    """stdout's reader closed the pipe (``edged config schema | head``): end quietly.

    As tools do when SIGPIPE ends them: no traceback, status 141. Python
    ignores SIGPIPE (the daemon must, for its sockets), so the write raised
    instead; stdout now points at /dev/null, so that the interpreter's last
    flush of what is still buffered cannot complain either.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout has no descriptor (replaced in-process)
        pass
    finally:
        os.close(devnull)
    return EX_PIPE


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "run":  # run configures logging from its settings
        configure_logging(args.log_level or "warning")
    try:
        return int(args.func(args))
    except ConfigError as exc:
        _print_problems(exc.problems, header="invalid configuration")
        return EX_CONFIG
    except EdgedError as exc:
        print(f"edged: {exc}", file=sys.stderr)
        return EX_FAILURE
    except KeyboardInterrupt:
        return EX_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
