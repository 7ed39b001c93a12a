"""The PaddleNLP side of ``paddle-bundle fetch``; runs as ``python -m bundler._fetch_child``.

:mod:`bundler.fetch` starts this module in a child process with ``PPNLP_HOME`` set, because
PaddleNLP reads ``PPNLP_HOME`` and ``PPNLP_ENDPOINT`` once, at import, and because whatever
Paddle allocates dies with the child. It is the only module of paddle-bundle that imports
PaddleNLP to download.

PaddleNLP's own loaders (``AutoConfig``, ``AutoTokenizer`` slow and fast, ``AutoModel``,
``GenerationConfig``, or ``Taskflow`` built and run once) do the resolving, so the cache
ends up holding exactly what PaddleNLP would load, byte for byte. Wrappers installed around
PaddleNLP's download helpers (:mod:`bundler.capture.recorder`, shared with ``fetch -- CMD``)
record what happened (tools/FINDINGS-internals.md section 4):

* every file a loader was handed, already cached or downloaded, with its model folder;
* every optional file the server answered 404 for ("absent upstream");
* every failure, even those the loaders swallow (a 403 on a probe is "absent" to PaddleNLP;
  a broken ``generation_config.json`` download is caught by ``from_pretrained``). Any recorded
  failure fails the fetch, so a bundle never rests on a guess.

For plain models memory stays flat: ``from_pretrained`` is forced into ``low_cpu_mem_usage``
(the model is built under ``paddle.LazyGuard`` with no weight initialisation), and reading the
weights (``load_state_dict``, ``_load_pretrained_model``) is replaced by no-ops. The weight
files are still resolved, i.e. downloaded, by PaddleNLP's own code; they are never read. A
task is loaded for real instead: which weights it reads is only known by running it, and
every weight file it reads must be one the bundle will hold (:class:`_WeightWatch`).

Protocol: ``argv[1]`` is a JSON request ``{"models": [...], "task": str | null,
"task_args": {...}, "report": path, "events_fd": int | null, "prove": bool,
"expect": [[model, step]...]}``. With ``prove`` the same loads run with nothing recorded,
in the offline mode the environment switches on (``fetch``'s proof). The child writes a
JSON report to ``report`` (see :func:`bundler.fetch.parse_report`) and exits 0 whenever it
could write one, failure or not; progress events go to ``events_fd`` as JSON lines.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

from bundler import _offline
from bundler.capture import recorder
from bundler.capture.recorder import REPORT_VERSION, Recorder, one_line, reason

# The recorder lives in bundler.capture.recorder (shared with ``fetch -- CMD``); these names
# stay importable from here.
_one_line = one_line
_reason = reason


def install(rec: Recorder, *, task_mode: bool) -> None:
    """Wrap PaddleNLP's download helpers (recording) and model loading (memory)."""
    recorder.install(rec, task_mode=task_mode)
    if not task_mode:  # a task loads for real (see _load_task); the rest is for plain loads
        _limit_memory()


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




# -- the loaders ---------------------------------------------------------------------------
def _load_plain(model_id: str, rec: Recorder, steps: list[dict[str, Any]]) -> None:
    """What any ordinary load of ``model_id`` by name resolves: config, the slow *and* the
    fast tokenizer (``use_fast=True`` asks for other files: ``tokenizer.json``,
    ``tokenizer.model``...), the chat template (``chat_template.json`` or inside
    ``tokenizer_config.json``), the weights (every shard) and the generation config."""
    from paddlenlp.generation import GenerationConfig
    from paddlenlp.transformers import AutoConfig, AutoModel, AutoTokenizer

    loaders: list[tuple[str, Callable[[], Any], bool]] = [
        ("AutoConfig", lambda: AutoConfig.from_pretrained(model_id), False),
        ("AutoTokenizer", lambda: AutoTokenizer.from_pretrained(model_id), False),
        # Optional: the files are resolved before the tokenizer is built, so a fast
        # tokenizer that cannot be built here (no `tokenizers`) still gets its files.
        ("AutoTokenizer(use_fast=True)",
         lambda: AutoTokenizer.from_pretrained(model_id, use_fast=True), False),
        ("AutoModel", lambda: AutoModel.from_pretrained(model_id), True),
        ("GenerationConfig", lambda: GenerationConfig.from_pretrained(model_id), False),
    ]
    for name, load, required in loaders:
        _step(model_id, name, load, required, rec, steps)
        if rec.failures:
            return


#: What each task is run on once, when a plain string is not its input.
_TASK_INPUTS: dict[str, Any] = {
    "text_similarity": [["你好，世界", "您好，世界"]],
}
_TASK_TEXT = "2024年张三在北京测试飞桨。"
#: Files whose reading means "the task loaded its weights".
_WEIGHT_SUFFIXES = (".pdparams", ".safetensors", ".pdiparams", ".bin", ".onnx")
#: Arguments the Taskflow front end fills in itself, never asked of the user.
_TASKFLOW_FILLS = frozenset({"self", "task", "model", "priority_path", "from_hf_hub"})


class _WeightWatch:
    """Which weight files the task read, and which this process wrote (Taskflow's static
    export, derived from weights read before). Python reads and writes are seen by an audit
    hook; Paddle reads and writes the static model in C++, so ``paddle.inference.Config``
    and ``paddle.jit.save`` are wrapped."""

    def __init__(self) -> None:
        self.read: list[str] = []
        self.written: set[str] = set()

    def install(self) -> None:
        import paddle

        def hook(event: str, args: tuple[Any, ...]) -> None:
            if event != "open" or not isinstance(args[0], str) or \
                    not args[0].endswith(_WEIGHT_SUFFIXES):
                return
            path = os.path.abspath(args[0])
            mode = args[1] if isinstance(args[1], str) else "r"
            flags = args[2] if isinstance(args[2], int) else 0
            if any(c in mode for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR):
                self.written.add(path)
            elif path not in self.read:
                self.read.append(path)

        sys.addaudithook(hook)
        inference: Any = paddle.inference
        orig_config = inference.Config

        def config(*args: Any, **kwargs: Any) -> Any:
            for arg in args:
                if isinstance(arg, str) and arg.endswith(_WEIGHT_SUFFIXES):
                    path = os.path.abspath(arg)
                    if path not in self.read:
                        self.read.append(path)
            return orig_config(*args, **kwargs)

        inference.Config = config
        jit: Any = paddle.jit
        orig_save = jit.save

        def save(layer: Any, path: str, *args: Any, **kwargs: Any) -> Any:
            result = orig_save(layer, path, *args, **kwargs)
            folder, prefix = os.path.split(os.path.abspath(path))
            with contextlib.suppress(OSError):
                self.written.update(os.path.join(folder, name) for name in os.listdir(folder)
                                    if name.startswith(prefix))
            return result

        jit.save = save

    def problem(self, task: str, rec: Recorder) -> str | None:
        """Why the bundle would lack the weights the task loaded, or None."""
        bundled = set(rec.files)
        packages = (getattr(sys.modules.get(name), "__file__", None)
                    for name in ("paddle", "paddlenlp"))
        shipped = tuple(os.path.dirname(os.path.abspath(f)) + os.sep
                        for f in packages if isinstance(f, str))
        for path in self.read:  # files installed with Paddle/PaddleNLP are there offline too
            if path not in bundled and path not in self.written and \
                    not path.startswith(shipped):
                return (f"Taskflow({task!r}) read its weights from {path}, which fetch cannot "
                        "bundle (PaddleNLP did not download or resolve it as a model file)")
        if not any(p in bundled for p in self.read):
            return f"Taskflow({task!r}) loaded no weights from the files fetch can bundle"
        return None


def _missing_task_arg(task: str, model_id: str | None, args: dict[str, Any]) -> str | None:
    """The first argument the task's class requires that ``args`` lacks (Taskflow would
    fail with a TypeError naming it, after downloading the tokenizer)."""
    import inspect

    from paddlenlp.taskflow.taskflow import TASKS

    entry = TASKS.get(task, {})
    tag = "modes" if task in ("word_segmentation", "ner", "text_classification") else "models"
    name = model_id if model_id is not None else entry.get("default", {}).get(tag[:-1])
    config = entry.get(tag, {}).get(name)
    if not isinstance(config, dict) or "task_class" not in config:
        return None  # Taskflow itself explains an unknown task or model
    try:
        params = inspect.signature(config["task_class"].__init__).parameters.values()
    except (TypeError, ValueError):
        return None
    for param in params:
        if param.default is inspect.Parameter.empty and param.kind in (
                inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY) \
                and param.name not in _TASKFLOW_FILLS and param.name not in config \
                and param.name not in args:
            return param.name
    return None


def _load_task(task: str, model_id: str | None, args: dict[str, Any], rec: Recorder,
               steps: list[dict[str, Any]]) -> None:
    """Construct ``Taskflow(task, model=..., **args)`` for real and run it once on a short
    input: that is how a task loads its weights (some only at the first call, some through
    the static inference model it exports). Then check the weights it read are bundled."""
    from paddlenlp import Taskflow
    from paddlenlp.taskflow.task import Task
    from paddlenlp.taskflow.taskflow import TASKS

    label = model_id or ""
    missing = _missing_task_arg(task, model_id, args)
    if missing is not None:
        steps.append({"model": label, "step": f"Taskflow({task!r})", "ok": False,
                      "required": True, "error_type": "MissingTaskArg", "error": missing})
        return
    watch = _WeightWatch()
    watch.install()

    # A static export left by an earlier run would let Taskflow skip loading the weights
    # (and so fetch would skip them); rebuild it, as Taskflow does when the weights change.
    orig_inference = Task._get_inference_model

    def get_inference_model(self: Any) -> Any:
        if not self.is_static_model:
            self._param_updated = True
        return orig_inference(self)

    Task._get_inference_model = get_inference_model

    kwargs = dict(args)
    if model_id is not None:
        kwargs["model"] = model_id
    flow = _step(label, f"Taskflow({task!r})", lambda: Taskflow(task, **kwargs), True, rec,
                 steps)
    last = steps[-1]
    if not last["ok"] and last["error_type"] == "AssertionError":
        known = sorted(TASKS[task].get("models", {})) if task in TASKS else sorted(TASKS)
        what = "models of this task" if task in TASKS else "tasks"
        shown = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
        last["error"] = f"{last['error']} (known {what}: {shown})"
    if flow is None or rec.failures:
        return
    sample = _TASK_INPUTS.get(task, _TASK_TEXT)
    _step(label, f"Taskflow({task!r}) on {json.dumps(sample, ensure_ascii=False)}",
          lambda: flow(sample), True, rec, steps)
    if not steps[-1]["ok"] or rec.failures:
        return
    problem = watch.problem(task, rec)
    if problem is not None:
        rec.fail("weights", problem)


def _step(model_id: str, name: str, load: Callable[[], Any], required: bool, rec: Recorder,
          steps: list[dict[str, Any]]) -> Any:
    """Run one loader; record how it went. Returns what it built, or None."""
    obj = None
    try:
        obj = load()
        steps.append({"model": model_id, "step": name, "ok": True, "required": required,
                      "error": "", "error_type": ""})
    except Exception as exc:  # noqa: BLE001 - judged by the caller, with the recorder
        steps.append({"model": model_id, "step": name, "ok": False, "required": required,
                      "error": _one_line(exc), "error_type": type(exc).__name__})
    gc.collect()
    return obj


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
    task_args: dict[str, Any] = dict(request.get("task_args") or {})
    rec = Recorder(home, request.get("events_fd"))
    if request.get("prove"):
        return prove(request, rec)
    install(rec, task_mode=task is not None)
    # a task loads the weights it downloaded: paddle.load unpickles them through the scan's
    # allowlist, so a poisoned file on the server is refused here instead of run
    _offline.install_load_guard()
    bmod: Any = sys.modules["paddlenlp.utils.download.bos_download"]
    steps: list[dict[str, Any]] = []
    models: list[str] = list(request["models"])
    if task is not None:
        wanted: list[str | None] = list(models) or [None]  # None: the task's default
        for model_id in wanted:
            _load_task(task, model_id, task_args, rec, steps)
            if rec.failures or not all(s["ok"] for s in steps if s["required"]):
                break
    else:
        for model_id in models:
            _load_plain(model_id, rec, steps)
            if rec.failures:
                break
    report: dict[str, Any] = {
        "version": REPORT_VERSION, "endpoint": str(bmod.ENDPOINT), **_versions(),
        "files": [{"path": p, **v} for p, v in sorted(rec.files.items())],
        "absent": {root: sorted(names) for root, names in sorted(rec.absent.items())},
        "failures": rec.failures, "steps": steps, "error": None,
    }
    report["error"] = judge(models, task, report)
    return report


def prove(request: dict[str, Any], rec: Recorder) -> dict[str, Any]:
    """The same loads, in offline mode (switched on by the environment), with nothing recorded:
    ``fetch``'s proof of a new bundle installed in a scratch home. Every required step, and
    every step that worked online (``request["expect"]``), must work."""
    task: str | None = request.get("task")
    task_args: dict[str, Any] = dict(request.get("task_args") or {})
    steps: list[dict[str, Any]] = []
    if task is None:
        _limit_memory()
        for model_id in request["models"]:
            _load_plain(model_id, rec, steps)
    else:  # built and run for real, as online
        wanted: list[str | None] = list(request["models"]) or [None]
        for model_id in wanted:
            _load_task(task, model_id, task_args, rec, steps)
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
    for step in report["steps"]:
        model_id = step["model"]
        if step["required"] and not step["ok"] and step["error_type"] == "MissingTaskArg":
            name = step["error"]
            return {"kind": "usage", "model": model_id, "url": "",
                    "message": f"{step['step']} needs {name}=...: give it with "
                               f"--task-arg {name}=VALUE (JSON, e.g. a list, or a string)"}
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
    for step in report["steps"]:  # a task run with no model named: Taskflow's default
        if step["required"] and not step["ok"]:
            kind = "usage" if step["error_type"] == "AssertionError" else "loader"
            return {"kind": kind, "model": "", "url": "",
                    "message": f"{step['step']} failed: {step['error']}"}
    for failure in failures:
        if failure["kind"] == "weights":
            return {"kind": "weights", "message": failure["message"], "url": "", "model": ""}
    if not report["files"]:
        return {"kind": "loader", "model": ",".join(models), "url": "",
                "message": "the loaders used no file from the cache: nothing to bundle"}
    return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    with open(args[0], encoding="utf-8") as fh:
        request = json.load(fh)
    # What a user sets to build a fast tokenizer from a sentencepiece model with the
    # protobuf PaddleNLP pins; read when protobuf is first imported, so before Paddle.
    os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
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
