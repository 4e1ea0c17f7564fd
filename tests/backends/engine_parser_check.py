"""Parse a generated command line with the engine's own argument parser.

Run under the engine's tool venv (perfsanity.engines.tooling: sglang, sglang-router, dynamo-sglang, dynamo, aiperf); it does not
import perfsanity. Reads one JSON request from stdin::

    {"check": "sglang.launch_server" | "sglang_router.launch_router" | "dynamo.sglang"
              | "dynamo.frontend" | "dynamo.mocker" | "trtllm-serve" | "aiperf" | "sglang.bench_serving",
     "args": [...],            # the words after the module / executable name
     "env": {...}}             # set before parsing (engines read defaults from env)

(or a list of such requests) and prints one JSON object (or a list): ``{"ok": bool, "error": str | null, "unknown": [...], "version": str,
"parsed": {...}}``. Nothing is started and no model is loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import io
import json
import os
import sys


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _unknown_flags(parser: argparse.ArgumentParser, args: list[str]) -> list[str]:
    """``--flags`` the parser does not define under exactly that name (no prefix matching)."""
    known = {s for a in parser._actions for s in a.option_strings}  # noqa: SLF001 - argparse has no API
    return [a.split("=", 1)[0] for a in args if a.startswith("--") and a.split("=", 1)[0] not in known]


def _parse(parser: argparse.ArgumentParser, args: list[str]) -> tuple[argparse.Namespace | None, str | None]:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parser.parse_args(args), None
    except SystemExit:
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        return None, lines[-1] if lines else "argparse exited"


#: argparse dests that differ between SGLang releases (0.5.6: tensor_parallel_size; 0.5.23: tp_size)
_ALIASES = {
    "tp_size": ("tp_size", "tensor_parallel_size"),
    "pp_size": ("pp_size", "pipeline_parallel_size"),
    "ep_size": ("ep_size", "expert_parallel_size"),
    "dp_size": ("dp_size", "data_parallel_size"),
}


def _values(ns: argparse.Namespace | None, keys: tuple[str, ...]) -> dict:
    if ns is None:
        return {}
    out = {}
    for key in keys:
        dest = next((d for d in _ALIASES.get(key, (key,)) if hasattr(ns, d)), key)
        out[key] = getattr(ns, dest, None)
    return out


def check_sglang_server(args: list[str]) -> dict:
    from sglang.srt.server_args import ServerArgs

    parser = argparse.ArgumentParser(prog="sglang serve")  # as sglang.srt.server_args.prepare_server_args
    ServerArgs.add_cli_args(parser)
    ns, error = _parse(parser, args)
    keys = ("model_path", "host", "port", "disaggregation_mode", "disaggregation_bootstrap_port", "tp_size",
            "pp_size", "ep_size", "dp_size", "nnodes", "node_rank", "dist_init_addr", "skip_server_warmup")
    return {"error": error, "unknown": _unknown_flags(parser, args), "parsed": _values(ns, keys),
            "version": _version("sglang")}


def check_sglang_router(args: list[str]) -> dict:
    from sglang_router.launch_router import parse_router_args

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            ra = parse_router_args(args)
    except SystemExit:
        return {"error": err.getvalue().strip().splitlines()[-1], "parsed": {}, "version": _version("sglang-router")}
    parsed = {
        "pd_disaggregation": ra.pd_disaggregation,
        "prefill_urls": [list(p) for p in ra.prefill_urls],
        "decode_urls": list(ra.decode_urls),
        "host": ra.host,
        "port": ra.port,
        "worker_startup_timeout_secs": ra.worker_startup_timeout_secs,
        "request_timeout_secs": ra.request_timeout_secs,
    }
    return {"error": None, "parsed": parsed, "version": _version("sglang-router")}


class _Parsed(Exception):
    def __init__(self, namespace: argparse.Namespace) -> None:
        super().__init__("parsed")
        self.namespace = namespace


def check_dynamo_sglang(args: list[str]) -> dict:
    """dynamo.sglang's real ``parse_args`` (disagg section -> SGLang --config merger -> SGLang parser),
    stopped right before ServerArgs.from_cli_args, which would read the model's config."""
    import dynamo.sglang.args as dargs

    def stop(parsed_args, *a, **k):
        raise _Parsed(parsed_args)

    dargs.should_fetch_model = lambda *a, **k: False
    dargs.ServerArgs.from_cli_args = staticmethod(stop)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            asyncio.run(dargs.parse_args(args))
    except _Parsed as done:
        ns = done.namespace
        keys = ("model_path", "disaggregation_mode", "tp_size", "ep_size", "page_size", "mem_fraction_static",
                "disaggregation_transfer_backend", "cuda_graph_max_bs", "nnodes", "node_rank", "dist_init_addr")
        return {"error": None, "parsed": _values(ns, keys), "version": _version("ai-dynamo")}
    except SystemExit:
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        return {"error": lines[-1] if lines else "exit", "parsed": {}, "version": _version("ai-dynamo")}
    except Exception as exc:  # noqa: BLE001 - report any parser failure as data
        return {"error": f"{type(exc).__name__}: {exc}", "parsed": {}, "version": _version("ai-dynamo")}
    return {"error": "parse_args returned without reaching ServerArgs.from_cli_args", "parsed": {},
            "version": _version("ai-dynamo")}


def check_dynamo_frontend(args: list[str]) -> dict:
    import dynamo.frontend.main as fmain

    saved_argv = sys.argv
    sys.argv = ["dynamo.frontend", *args]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            config, _, _ = fmain.parse_args()
    except SystemExit:
        return {"error": err.getvalue().strip(), "parsed": {}, "version": _version("ai-dynamo")}
    finally:
        sys.argv = saved_argv  # later errors must not carry the frontend's program name
    keys = ("http_host", "http_port", "discovery_backend", "request_plane", "event_plane")
    return {"error": None, "parsed": {k: getattr(config, k, None) for k in keys}, "version": _version("ai-dynamo")}


def check_dynamo_mocker(args: list[str]) -> dict:
    from dynamo.mocker.args import parse_args

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            ns = parse_args(list(args))
    except SystemExit:
        return {"error": err.getvalue().strip(), "parsed": {}, "version": _version("ai-dynamo")}
    keys = ("model_path", "model_name", "disaggregation_mode", "speedup_ratio", "block_size")
    return {"error": None, "parsed": {k: getattr(ns, k, None) for k in keys}, "version": _version("ai-dynamo")}


def check_trtllm_serve(args: list[str]) -> dict:
    """click parsing only (``make_context`` does not invoke the command)."""
    from tensorrt_llm.commands import serve as tserve

    command = tserve.disaggregated if args[:1] == ["disaggregated"] else tserve.serve
    words = args[1:] if args[:1] == ["disaggregated"] else args
    try:
        ctx = command.make_context("trtllm-serve", list(words))
    except Exception as exc:  # noqa: BLE001 - click raises UsageError and friends
        return {"error": f"{type(exc).__name__}: {exc}", "parsed": {}, "version": _version("tensorrt_llm")}
    return {"error": None, "parsed": {k: v for k, v in ctx.params.items() if isinstance(v, (str, int, float))},
            "version": _version("tensorrt_llm")}


def check_aiperf(args: list[str]) -> dict:
    """aiperf's cyclopts app: ``parse_args`` binds and converts the options without running the command."""
    from aiperf.cli import app

    try:
        command, bound, _ = app.parse_args(list(args), exit_on_error=False, print_error=False)
    except Exception as exc:  # noqa: BLE001 - cyclopts raises UnknownOptionError, ValidationError, ...
        return {"error": f"{type(exc).__name__}: {exc}", "parsed": {}, "version": _version("aiperf")}
    return {"error": None, "parsed": {"command": getattr(command, "__name__", str(command))},
            "version": _version("aiperf")}


def check_module_main(module: str, dist: str, args: list[str]) -> dict:
    """Run ``python -m <module> <args>`` up to its first ``ArgumentParser.parse_args`` and stop there:
    for tools whose parser is built inline under ``if __name__ == "__main__"`` (sglang.bench_serving)."""
    import runpy

    real = argparse.ArgumentParser.parse_args

    def capture(self, args_=None, namespace=None):
        raise _Parsed(real(self, args_, namespace))

    argparse.ArgumentParser.parse_args = capture
    saved_argv = sys.argv
    sys.argv = [module, *args]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    except _Parsed as done:
        return {"error": None, "parsed": {k: v for k, v in vars(done.namespace).items()
                                          if isinstance(v, (str, int, float, bool))}, "version": _version(dist)}
    except SystemExit:
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        return {"error": lines[-1] if lines else "exit", "parsed": {}, "version": _version(dist)}
    finally:
        argparse.ArgumentParser.parse_args = real
        sys.argv = saved_argv
    return {"error": f"{module} never called parse_args", "parsed": {}, "version": _version(dist)}


def check_sglang_bench_serving(args: list[str]) -> dict:
    return check_module_main("sglang.bench_serving", "sglang", args)


CHECKS = {
    "sglang.launch_server": check_sglang_server,
    "sglang_router.launch_router": check_sglang_router,
    "dynamo.sglang": check_dynamo_sglang,
    "dynamo.frontend": check_dynamo_frontend,
    "dynamo.mocker": check_dynamo_mocker,
    "trtllm-serve": check_trtllm_serve,
    "aiperf": check_aiperf,
    "sglang.bench_serving": check_sglang_bench_serving,
}


def run(request: dict) -> dict:
    saved = dict(os.environ)
    os.environ.update(request.get("env") or {})
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # engines log to stdout; keep ours clean
            result = CHECKS[request["check"]](list(request["args"]))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    result.setdefault("unknown", [])
    result["ok"] = result["error"] is None
    return result


def main() -> None:
    """One request object in, one result out; or a list of requests in, a list of results out."""
    request = json.load(sys.stdin)
    result = [run(r) for r in request] if isinstance(request, list) else run(request)
    sys.stdout.write(json.dumps(result, default=str) + "\n")


if __name__ == "__main__":
    main()
