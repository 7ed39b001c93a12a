"""The PaddleNLP side of ``paddle-bundle fetch``; runs as ``python -m bundler._fetch_child``.

:mod:`bundler.fetch` starts this module in a child process with ``PPNLP_HOME`` set, because
PaddleNLP reads ``PPNLP_HOME`` and ``PPNLP_ENDPOINT`` once, at import, and because whatever
Paddle allocates dies with the child. It is the only module of paddle-bundle that imports
PaddleNLP to download.

PaddleNLP's own loaders (``AutoConfig``, ``AutoTokenizer``, ``AutoModel``,
``GenerationConfig``, or ``Taskflow``) do the resolving, so the cache ends up holding exactly
what PaddleNLP would load, byte for byte. Wrappers installed around PaddleNLP's download
helpers (:mod:`bundler.capture.recorder`, shared with ``fetch -- CMD``) record what happened
(tools/FINDINGS-internals.md section 4):

* every file a loader was handed, already cached or downloaded, with its model folder;
* every optional file the server answered 404 for ("absent upstream");
* every failure, even those the loaders swallow (a 403 on a probe is "absent" to PaddleNLP;
  a broken ``generation_config.json`` download is caught by ``from_pretrained``). Any recorded
  failure fails the fetch, so a bundle never rests on a guess.

Memory stays flat: ``from_pretrained`` is forced into ``low_cpu_mem_usage`` (the model is
built under ``paddle.LazyGuard`` with no weight initialisation), and reading the weights
(``load_state_dict``, ``_load_pretrained_model``) is replaced by no-ops. The weight files are
still resolved, i.e. downloaded, by PaddleNLP's own code; they are never read.

Protocol: ``argv[1]`` is a JSON request ``{"models": [...], "task": str | null,
"report": path, "events_fd": int | null, "prove": bool, "expect": [[model, step]...]}``.
With ``prove`` the same loads run with nothing recorded, in the offline mode the environment
switches on (``fetch``'s proof). The child writes a JSON report to ``report``
(see :func:`bundler.fetch.parse_report`) and exits 0 whenever it could write one, failure or
not; progress events go to ``events_fd`` as JSON lines.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

from bundler.capture import recorder
from bundler.capture.recorder import REPORT_VERSION, Recorder, one_line, reason

# The recorder lives in bundler.capture.recorder (shared with ``fetch -- CMD``); these names
# stay importable from here.
_one_line = one_line
_reason = reason


def install(rec: Recorder, *, task_mode: bool) -> None:
    """Wrap PaddleNLP's download helpers (recording) and model loading (memory)."""
    recorder.install(rec, task_mode=task_mode)
    _limit_memory()
    if task_mode:
        _skip_inference_model()


def _limit_memory() -> None:
    """Resolve the weight files, never read them."""
    from paddlenlp.transformers import model_utils

    base = model_utils.PretrainedModel
    orig_from_pretrained = base.from_pretrained.__func__

    def from_pretrained(cls: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs["low_cpu_mem_usage"] = True  # LazyGuard + no_init_weights: no tensors
        return orig_from_pretrained(cls, *args, **kwargs)

    def load_state_dict(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return {}

    def load_pretrained_model(cls: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
        return model, [], [], []

    base.from_pretrained = classmethod(from_pretrained)
    base._load_pretrained_model = classmethod(load_pretrained_model)
    model_utils.load_state_dict = load_state_dict


def _skip_inference_model() -> None:
    """Taskflow would build its inference model from the weights (and write derived files)."""
    from paddlenlp.taskflow.task import Task

    def skip_inference_model(self: Any, *args: Any, **kwargs: Any) -> None:
        return None

    Task._get_inference_model = skip_inference_model


# -- the loaders ---------------------------------------------------------------------------
def _load_plain(model_id: str, rec: Recorder, steps: list[dict[str, Any]]) -> None:
    """What loading ``model_id`` by name resolves: config, tokenizer, weights, generation."""
    from paddlenlp.generation import GenerationConfig
    from paddlenlp.transformers import AutoConfig, AutoModel, AutoTokenizer

    loaders: list[tuple[str, Callable[[], Any], bool]] = [
        ("AutoConfig", lambda: AutoConfig.from_pretrained(model_id), False),
        ("AutoTokenizer", lambda: AutoTokenizer.from_pretrained(model_id), False),
        ("AutoModel", lambda: AutoModel.from_pretrained(model_id), True),
        ("GenerationConfig", lambda: GenerationConfig.from_pretrained(model_id), False),
    ]
    for name, load, required in loaders:
        _step(model_id, name, load, required, rec, steps)
        if rec.failures:
            return


def _load_task(task: str, model_id: str, rec: Recorder, steps: list[dict[str, Any]]) -> None:
    from paddlenlp import Taskflow
    from paddlenlp.taskflow.taskflow import TASKS

    _step(model_id, f"Taskflow({task!r})", lambda: Taskflow(task, model=model_id), True, rec,
          steps)
    last = steps[-1]
    if not last["ok"] and last["error_type"] == "AssertionError":
        known = sorted(TASKS[task].get("models", {})) if task in TASKS else sorted(TASKS)
        what = "models of this task" if task in TASKS else "tasks"
        shown = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
        last["error"] = f"{last['error']} (known {what}: {shown})"


def _step(model_id: str, name: str, load: Callable[[], Any], required: bool, rec: Recorder,
          steps: list[dict[str, Any]]) -> None:
    try:
        obj = load()
        del obj
        steps.append({"model": model_id, "step": name, "ok": True, "required": required,
                      "error": "", "error_type": ""})
    except Exception as exc:  # noqa: BLE001 - judged by the caller, with the recorder
        steps.append({"model": model_id, "step": name, "ok": False, "required": required,
                      "error": _one_line(exc), "error_type": type(exc).__name__})
    gc.collect()


def _versions() -> dict[str, str]:
    import paddle
    import paddlenlp

    return {"paddlenlp": str(getattr(paddlenlp, "__version__", "")),
            "paddle": str(getattr(paddle, "__version__", ""))}


def run(request: dict[str, Any]) -> dict[str, Any]:
    """Run the loaders for every requested model and describe what happened."""
    home = os.environ.get("PPNLP_HOME", "")
    if not home:
        raise RuntimeError("PPNLP_HOME must be set for the fetch child")
    modelscope = os.environ.get("from_modelscope", "")  # noqa: SIM112 - PaddleNLP's spelling
    if modelscope.lower() in ("1", "true", "yes", "y", "on"):
        return {"version": REPORT_VERSION, "error": {
            "kind": "usage", "model": "", "url": "",
            "message": "from_modelscope is set: fetch records downloads from PaddleNLP's BOS "
                       "server only; unset from_modelscope"}}
    task: str | None = request.get("task")
    rec = Recorder(home, request.get("events_fd"))
    if request.get("prove"):
        return prove(request, rec)
    install(rec, task_mode=task is not None)
    bmod: Any = sys.modules["paddlenlp.utils.download.bos_download"]
    steps: list[dict[str, Any]] = []
    for model_id in request["models"]:
        if task is None:
            _load_plain(model_id, rec, steps)
        else:
            _load_task(task, model_id, rec, steps)
        if rec.failures:
            break
    report: dict[str, Any] = {
        "version": REPORT_VERSION, "endpoint": str(bmod.ENDPOINT), **_versions(),
        "files": [{"path": p, **v} for p, v in sorted(rec.files.items())],
        "absent": {root: sorted(names) for root, names in sorted(rec.absent.items())},
        "failures": rec.failures, "steps": steps, "error": None,
    }
    report["error"] = judge(request["models"], task, report)
    return report


def prove(request: dict[str, Any], rec: Recorder) -> dict[str, Any]:
    """The same loads, in offline mode (switched on by the environment), with nothing recorded:
    ``fetch``'s proof of a new bundle installed in a scratch home. Every required step, and
    every step that worked online (``request["expect"]``), must work."""
    task: str | None = request.get("task")
    _limit_memory()
    if task is not None:
        import paddlenlp.taskflow  # noqa: F401 - imports every task module

        _skip_inference_model()
    steps: list[dict[str, Any]] = []
    for model_id in request["models"]:
        if task is None:
            _load_plain(model_id, rec, steps)
        else:
            _load_task(task, model_id, rec, steps)
    expect = {(str(m), str(s)) for m, s in request.get("expect", [])}
    error = None
    for step in steps:
        if not step["ok"] and (step["required"] or (step["model"], step["step"]) in expect):
            error = {"kind": "proof", "model": step["model"], "url": "",
                     "message": f"{step['step']} failed offline for {step['model']}: "
                                f"{step['error']}"}
            break
    return {"version": REPORT_VERSION, "endpoint": "", **_versions(), "files": [],
            "absent": {}, "failures": [], "steps": steps, "error": error}


def judge(models: list[str], task: str | None, report: dict[str, Any]) -> dict[str, str] | None:
    """The one error that explains a failed fetch, or None when every model resolved.

    Order matters: a network failure explains the 404-free silence that follows it, and a
    model with no file at all is "not on the server" only when nothing else went wrong.
    """
    failures: list[dict[str, str]] = report["failures"]
    for kind in ("network", "download", "http", "probe", "unsupported"):
        for failure in failures:
            if failure["kind"] == kind:
                return {"kind": kind, "message": failure["message"], "url": failure["url"],
                        "model": ""}
    roots = {f["root"] for f in report["files"]}
    for model_id in models:
        mine = [s for s in report["steps"] if s["model"] == model_id]
        if task is None and f"models/{model_id}" not in roots:
            return {"kind": "not_found", "model": model_id, "url": "",
                    "message": f"model {model_id} is not on {report['endpoint']}"}
        for step in mine:
            if step["required"] and not step["ok"]:
                kind = "usage" if task is not None and step["error_type"] == "AssertionError" \
                    else "loader"
                return {"kind": kind, "model": model_id, "url": "",
                        "message": f"{step['step']} failed for {model_id}: {step['error']}"}
    if not report["files"]:
        return {"kind": "loader", "model": ",".join(models), "url": "",
                "message": "the loaders used no file from the cache: nothing to bundle"}
    return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    with open(args[0], encoding="utf-8") as fh:
        request = json.load(fh)
    events_fd = request.get("events_fd")
    if isinstance(events_fd, int):
        os.set_inheritable(events_fd, False)  # grandchildren must not hold the pipe open
    try:
        report = run(request)
    except Exception as exc:  # noqa: BLE001 - reported, not printed as a traceback
        report = {"version": REPORT_VERSION, "error": {
            "kind": "crash", "model": "", "url": "",
            "message": f"{type(exc).__name__}: {_one_line(exc)}"}}
        traceback.print_exc()
    tmp = request["report"] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=1)
    os.replace(tmp, request["report"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
